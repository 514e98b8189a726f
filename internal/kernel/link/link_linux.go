// Package link is kvmnet's thin backend over rtnetlink: bridges, taps, ports,
// addresses and routes. Project-owned value types go in and out, so
// vishvananda/netlink types never leak upward. It makes no policy decisions.
package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/user"
	"runtime"
	"strconv"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// Link is what kvmnet needs to know about one network device.
type Link struct {
	Name   string
	Index  int
	Kind   string // "bridge", "tuntap", "veth", "device", ...
	Alias  string // IFLA_IFALIAS; kvmnet marks what it owns here
	Master string // name of the bridge it is enslaved to, or ""
	MTU    int
	Up     bool // administratively up (IFF_UP)
	HWAddr string
	Addrs  []netip.Prefix // IPv4 addresses, scope global
	// Isolated is the bridge port flag, read for enslaved links only.
	Isolated bool
	// VLANFiltering, VLANs, VLANParent and VLANID: see plan.Link.
	VLANFiltering bool
	VLANs         []plan.VLAN
	VLANParent    string
	VLANID        int
}

// TapOptions are the parameters of a persistent tap (`ip tuntap add`).
type TapOptions struct {
	Queues  int    // >1: multi_queue
	Owner   string // user name or uid; "" for none
	VnetHdr bool
}

// Handle is a netlink socket bound to one network namespace.
type Handle struct {
	nl *netlink.Handle
	ns netns.NsHandle // the namespace nl is bound to, for extra sockets
}

// New opens a handle in the namespace ns; a closed or zero ns handle means
// the calling thread's namespace.
func New(ns netns.NsHandle) (*Handle, error) {
	var err error
	if ns.IsOpen() {
		ns, err = dupNS(ns)
	} else {
		// Remember the calling thread's namespace, so that sockets made
		// later on other threads (DeleteAll) land in the same one.
		ns, err = netns.Get()
	}
	if err != nil {
		return nil, fmt.Errorf("opening network namespace handle: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("opening netlink socket: %w", err)
	}
	return &Handle{nl: h, ns: ns}, nil
}

func dupNS(ns netns.NsHandle) (netns.NsHandle, error) {
	fd, err := unix.Dup(int(ns))
	if err != nil {
		return netns.None(), err
	}
	return netns.NsHandle(fd), nil
}

// Close releases the netlink socket.
func (h *Handle) Close() {
	h.nl.Close()
	h.ns.Close()
}

// IsNotFound reports whether err means the link does not exist.
func IsNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// IsExist reports whether err means the object exists already.
func IsExist(err error) bool { return errors.Is(err, unix.EEXIST) }

// List returns every link of the namespace with its IPv4 addresses.
func (h *Handle) List() ([]Link, error) {
	links, _, err := h.list(false)
	return links, err
}

// ListWithHosts is List, plus every link's host configuration (see
// HostConfigs), from the same link and address dumps.
func (h *Handle) ListWithHosts() ([]Link, map[string]plan.HostConfig, error) {
	return h.list(true)
}

func (h *Handle) list(hosts bool) ([]Link, map[string]plan.HostConfig, error) {
	links, err := dump(h.nl.LinkList)
	if err != nil {
		return nil, nil, fmt.Errorf("listing links: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	family := netlink.FAMILY_V4
	if hosts {
		family = netlink.FAMILY_ALL
	}
	list, err := h.addrList(family)
	if err != nil {
		return nil, nil, err
	}
	isolated, err := h.isolatedPorts()
	if err != nil {
		return nil, nil, err
	}
	vlans, err := h.portVLANs()
	if err != nil {
		return nil, nil, err
	}
	var hc map[string]plan.HostConfig
	if hosts {
		if hc, err = h.hostConfigs(names, list); err != nil {
			return nil, nil, err
		}
	}
	addrs := globalIPv4(list)
	out := make([]Link, 0, len(links))
	for _, l := range links {
		a := l.Attrs()
		out = append(out, Link{
			Isolated: isolated[a.Index],
			Name:     a.Name,
			Index:    a.Index,
			Kind:     l.Type(),
			Alias:    a.Alias,
			Master:   names[a.MasterIndex],
			MTU:      a.MTU,
			Up:       a.Flags&net.FlagUp != 0,
			HWAddr:   a.HardwareAddr.String(),
			Addrs:    addrs[a.Index],
			VLANs:    vlans[a.Index],
		})
		vlanAttrs(&out[len(out)-1], l, names)
	}
	return out, hc, nil
}

// isolatedPorts returns the indexes of bridge ports whose isolated flag is
// set, from one AF_BRIDGE link dump (`bridge -d link show`). The library's
// LinkGetProtinfo dumps every port to find one, which made observing a
// thousand ports quadratic (measured: 5.9 s for a no-op apply).
func (h *Handle) isolatedPorts() (map[int]bool, error) {
	sock, err := nl.GetNetlinkSocketAt(h.ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening netlink socket: %w", err)
	}
	defer sock.Close()
	msgs, err := dump(func() ([][]byte, error) {
		req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sock}}
		req.AddData(nl.NewIfInfomsg(unix.AF_BRIDGE))
		return req.Execute(unix.NETLINK_ROUTE, 0)
	})
	if err != nil {
		return nil, fmt.Errorf("listing bridge ports: %w", err)
	}
	out := map[int]bool{}
	for _, m := range msgs {
		ifi := nl.DeserializeIfInfomsg(m)
		attrs, err := nl.ParseRouteAttr(m[ifi.Len():])
		if err != nil {
			return nil, fmt.Errorf("parsing bridge port %d: %w", ifi.Index, err)
		}
		for _, a := range attrs {
			if a.Attr.Type != unix.IFLA_PROTINFO|unix.NLA_F_NESTED {
				continue
			}
			infos, err := nl.ParseRouteAttr(a.Value)
			if err != nil {
				return nil, fmt.Errorf("parsing bridge port %d: %w", ifi.Index, err)
			}
			for _, info := range infos {
				if info.Attr.Type == nl.IFLA_BRPORT_ISOLATED && len(info.Value) > 0 && info.Value[0] != 0 {
					out[int(ifi.Index)] = true
				}
			}
		}
	}
	return out, nil
}

// addrList dumps the addresses of all links of a family.
func (h *Handle) addrList(family int) ([]netlink.Addr, error) {
	list, err := dump(func() ([]netlink.Addr, error) { return h.nl.AddrList(nil, family) })
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	return list, nil
}

// globalIPv4 picks the IPv4 global addresses of list, by link index.
func globalIPv4(list []netlink.Addr) map[int][]netip.Prefix {
	out := map[int][]netip.Prefix{}
	for _, a := range list {
		if a.Scope != int(netlink.SCOPE_UNIVERSE) {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		out[a.LinkIndex] = append(out[a.LinkIndex], netip.PrefixFrom(ip, ones))
	}
	return out
}

// DefaultRouteLink returns the name of the link of the IPv4 default route
// with the lowest metric in the main table, or "" if there is none.
func (h *Handle) DefaultRouteLink() (string, error) {
	name, _, err := h.DefaultRoute()
	return name, err
}

// DefaultRoute returns the link and the gateway of the IPv4 default route
// with the lowest metric in the main table (of its first next hop when it
// has several): "" when there is none, an invalid gateway when it has none.
func (h *Handle) DefaultRoute() (string, netip.Addr, error) {
	routes, err := dump(func() ([]netlink.Route, error) {
		return h.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return "", netip.Addr{}, fmt.Errorf("listing routes: %w", err)
	}
	best, bestIdx := -1, 0
	var gw net.IP
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		idx, via := r.LinkIndex, r.Gw
		if idx == 0 && len(r.MultiPath) > 0 {
			idx, via = r.MultiPath[0].LinkIndex, r.MultiPath[0].Gw
		}
		if best == -1 || r.Priority < best {
			best, bestIdx, gw = r.Priority, idx, via
		}
	}
	if best == -1 {
		return "", netip.Addr{}, nil
	}
	l, err := h.nl.LinkByIndex(bestIdx)
	if err != nil {
		return "", netip.Addr{}, fmt.Errorf("finding link %d of the default route: %w", bestIdx, err)
	}
	a, _ := netip.AddrFromSlice(gw.To4())
	return l.Attrs().Name, a, nil
}

// AddBridge creates a bridge and marks it:
// `ip link add NAME type bridge && ip link set NAME alias ALIAS`. The kernel
// ignores IFLA_IFALIAS in a create request, so this takes two; callers
// journal the name first so that a crash in between can be recognised.
func (h *Handle) AddBridge(name string, mtu int, alias string) error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := h.nl.LinkAdd(br); err != nil {
		return fmt.Errorf("creating bridge %q: %w", name, err)
	}
	// A bridge keeps its MTU when ports with another MTU join only if the
	// MTU was changed after creation (BROPT_MTU_SET_BY_USER); an MTU given
	// at creation, or set to the value it already has, follows the smallest
	// port. So change it, through another value if need be.
	if mtu != 0 {
		var err error
		if mtu == defaultBridgeMTU {
			err = h.SetMTU(name, mtu-1)
		}
		if err == nil {
			err = h.SetMTU(name, mtu)
		}
		if err != nil {
			return errors.Join(err, h.Delete(name))
		}
	}
	if alias != "" {
		if err := h.SetAlias(name, alias); err != nil {
			return errors.Join(err, h.Delete(name))
		}
	}
	// kvmnet's bridges never send bridged frames through iptables.
	if err := h.SetBridgeNF(name, false); err != nil {
		return errors.Join(err, h.Delete(name))
	}
	return nil
}

// AddTap creates a persistent tap:
// `ip tuntap add dev NAME mode tap [multi_queue] [vnet_hdr] [user OWNER]`.
func (h *Handle) AddTap(name string, opt TapOptions, alias string) error {
	flags := netlink.TUNTAP_NO_PI
	queues := 0
	if opt.Queues > 1 {
		flags |= netlink.TUNTAP_MULTI_QUEUE
		queues = opt.Queues
	} else {
		flags |= netlink.TUNTAP_ONE_QUEUE
	}
	if opt.VnetHdr {
		flags |= netlink.TUNTAP_VNET_HDR
	}
	// The netlink library always issues TUNSETOWNER and TUNSETGROUP, and the
	// kernel refuses (uid_t)-1 there, so "no owner" is root: only root or
	// CAP_NET_ADMIN may attach to the tap, as with `ip tuntap` without user.
	owner := uint32(0)
	if opt.Owner != "" {
		uid, err := lookupUID(opt.Owner)
		if err != nil {
			return fmt.Errorf("creating tap %q: %w", name, err)
		}
		owner = uid
	}
	// A tap is created by ioctl on /dev/net/tun, which acts in the network
	// namespace of the calling thread, not in the handle's. Refuse rather
	// than create it in the wrong namespace.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cur, err := netns.Get()
	if err != nil {
		return fmt.Errorf("creating tap %q: %w", name, err)
	}
	same := cur.Equal(h.ns)
	cur.Close()
	if !same {
		return fmt.Errorf("creating tap %q: the calling thread is not in the handle's network namespace", name)
	}
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: name},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     flags,
		Queues:    queues,
		Owner:     owner,
		Group:     0,
	}
	if err := h.nl.LinkAdd(tap); err != nil {
		return fmt.Errorf("creating tap %q: %w", name, err)
	}
	// LinkAdd keeps the queue file descriptors open; the tap is persistent,
	// so close them and let qemu open its own.
	for _, f := range tap.Fds {
		f.Close()
	}
	// Taps are made by ioctl, so the alias comes in a second request; see
	// AddBridge.
	if alias != "" {
		if err := h.SetAlias(name, alias); err != nil {
			return errors.Join(err, h.Delete(name))
		}
	}
	return nil
}

func lookupUID(owner string) (uint32, error) {
	if n, err := strconv.ParseUint(owner, 10, 32); err == nil {
		return uint32(n), nil
	}
	u, err := user.Lookup(owner)
	if err != nil {
		return 0, fmt.Errorf("looking up tap owner %q: %w", owner, err)
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("uid %q of user %q: %w", u.Uid, owner, err)
	}
	return uint32(n), nil
}

func (h *Handle) byName(name string) (netlink.Link, error) {
	l, err := h.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("finding link %q: %w", name, err)
	}
	return l, nil
}

// Delete removes a link: `ip link del NAME`.
func (h *Handle) Delete(name string) error {
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	if err := h.nl.LinkDel(l); err != nil {
		return fmt.Errorf("deleting link %q: %w", name, err)
	}
	return nil
}

// defaultBridgeMTU is the MTU of a new bridge without ports.
const defaultBridgeMTU = 1500

// deleteWorkers bounds concurrent deletions. Unregistering a device waits
// for an RCU grace period after the rtnl lock is released, so deletions in
// parallel overlap their waits: measured here, 200 taps take 3.5 s one
// after the other and 0.6 s with 16 at a time.
const deleteWorkers = 16

// DeleteAll deletes links concurrently and returns one error per name (nil
// where it worked). Each worker has its own netlink socket in h's namespace.
func (h *Handle) DeleteAll(names []string) []error {
	errs := make([]error, len(names))
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(deleteWorkers, len(names)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nl, err := netlink.NewHandleAt(h.ns)
			if err != nil {
				for i := range next {
					errs[i] = fmt.Errorf("deleting link %q: opening netlink socket: %w", names[i], err)
				}
				return
			}
			defer nl.Close()
			for i := range next {
				l, err := nl.LinkByName(names[i])
				if err == nil {
					err = nl.LinkDel(l)
				}
				if err != nil {
					errs[i] = fmt.Errorf("deleting link %q: %w", names[i], err)
				}
			}
		}()
	}
	for i := range names {
		next <- i
	}
	close(next)
	wg.Wait()
	return errs
}

// SetAlias sets IFLA_IFALIAS: `ip link set NAME alias ALIAS`.
func (h *Handle) SetAlias(name, alias string) error {
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	if err := h.nl.LinkSetAlias(l, alias); err != nil {
		return fmt.Errorf("setting alias of %q: %w", name, err)
	}
	return nil
}

// SetMaster enslaves link to bridge master (`ip link set LINK master BR`),
// or frees it when master is "" (`ip link set LINK nomaster`).
func (h *Handle) SetMaster(name, master string) error {
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	if master == "" {
		if err := h.nl.LinkSetNoMaster(l); err != nil {
			return fmt.Errorf("releasing %q from its bridge: %w", name, err)
		}
		return nil
	}
	m, err := h.byName(master)
	if err != nil {
		return err
	}
	if err := h.nl.LinkSetMasterByIndex(l, m.Attrs().Index); err != nil {
		return fmt.Errorf("enslaving %q to bridge %q: %w", name, master, err)
	}
	return nil
}

// SetHWAddr is `ip link set NAME address MAC`.
func (h *Handle) SetHWAddr(name, mac string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("setting address of %q: %w", name, err)
	}
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	if err := h.nl.LinkSetHardwareAddr(l, hw); err != nil {
		return fmt.Errorf("setting address %s on %q: %w", mac, name, err)
	}
	return nil
}

// SetIsolated is `bridge link set dev NAME isolated on|off`.
func (h *Handle) SetIsolated(name string, on bool) error {
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	if err := h.nl.LinkSetIsolated(l, on); err != nil {
		return fmt.Errorf("setting isolated=%t on bridge port %q: %w", on, name, err)
	}
	return nil
}

// SetMTU is `ip link set NAME mtu MTU`.
func (h *Handle) SetMTU(name string, mtu int) error {
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	if err := h.nl.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("setting mtu %d on %q: %w", mtu, name, err)
	}
	return nil
}

// SetUp is `ip link set NAME up|down`.
func (h *Handle) SetUp(name string, up bool) error {
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	if up {
		err = h.nl.LinkSetUp(l)
	} else {
		err = h.nl.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("setting %q up=%t: %w", name, up, err)
	}
	return nil
}

// AddAddr is `ip addr add PREFIX dev NAME` (the broadcast address derived
// from the prefix, as `brd +` would).
func (h *Handle) AddAddr(name string, p netip.Prefix) error {
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	a := toAddr(p)
	if p.Bits() < 31 {
		a.Broadcast = broadcast(p)
	}
	if err := h.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("adding address %s to %q: %w", p, name, err)
	}
	return nil
}

// DelAddr is `ip addr del PREFIX dev NAME`.
func (h *Handle) DelAddr(name string, p netip.Prefix) error {
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	if err := h.nl.AddrDel(l, toAddr(p)); err != nil {
		return fmt.Errorf("deleting address %s from %q: %w", p, name, err)
	}
	return nil
}

func toAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}}
}

func broadcast(p netip.Prefix) net.IP {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	// 4 bytes: the kernel ignores a 16-byte IFA_BROADCAST.
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4()
}

// Event is a change the daemon may have to react to.
type Event struct {
	// Link is the name of a link that appeared or changed (RTM_NEWLINK).
	Link string
	// Addr is set when an IPv4 address was added or removed: forwards
	// listen on the egress interface's addresses.
	Addr bool
}

// Watch reports link and address changes of the handle's namespace until
// done is closed. The channel is closed if a subscription fails.
func (h *Handle) Watch(done <-chan struct{}) (<-chan Event, error) {
	links := make(chan netlink.LinkUpdate, 256)
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: &h.ns}); err != nil {
		return nil, fmt.Errorf("subscribing to link events: %w", err)
	}
	addrs := make(chan netlink.AddrUpdate, 256)
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: &h.ns}); err != nil {
		return nil, fmt.Errorf("subscribing to address events: %w", err)
	}
	out := make(chan Event, 256)
	send := func(ev Event) bool {
		select {
		case out <- ev:
			return true
		case <-done:
			return false
		}
	}
	go func() {
		defer close(out)
		for links != nil || addrs != nil {
			select {
			case u, ok := <-links:
				if !ok {
					links = nil
					continue
				}
				if u.Header.Type == unix.RTM_NEWLINK && u.Link != nil && !send(Event{Link: u.Link.Attrs().Name}) {
					return
				}
			case u, ok := <-addrs:
				if !ok {
					addrs = nil
					continue
				}
				if u.LinkAddress.IP.To4() != nil && !send(Event{Addr: true}) {
					return
				}
			}
		}
	}()
	return out, nil
}

// Stats are one link's counters, as `ip -s link` shows them.
type Stats struct {
	RxPackets, TxPackets, RxErrors, TxErrors, RxDropped, TxDropped uint64
}

// Stats returns every link's counters from one link dump.
func (h *Handle) Stats() (map[string]Stats, error) {
	links, err := dump(h.nl.LinkList)
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	out := make(map[string]Stats, len(links))
	for _, l := range links {
		a := l.Attrs()
		if s := a.Statistics; s != nil {
			out[a.Name] = Stats{RxPackets: s.RxPackets, TxPackets: s.TxPackets, RxErrors: s.RxErrors, TxErrors: s.TxErrors, RxDropped: s.RxDropped, TxDropped: s.TxDropped}
		} else {
			out[a.Name] = Stats{}
		}
	}
	return out, nil
}
