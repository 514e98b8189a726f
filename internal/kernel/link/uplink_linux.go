package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// Address flags a caller may set; the rest (secondary, tentative,
// permanent, deprecated, dadfailed) the kernel keeps for itself.
const settableAddrFlags = unix.IFA_F_NODAD | unix.IFA_F_HOMEADDRESS | unix.IFA_F_MANAGETEMPADDR |
	unix.IFA_F_NOPREFIXROUTE | unix.IFA_F_MCAUTOJOIN

// Route protocols (rtnetlink.h) that the kernel owns on a link.
const (
	protoKernel = 2 // made from an address
	protoRA     = 9 // learned from a router advertisement: relearned on the bridge
)

// HostConfigs returns, by link name, the addresses and routes of every
// link that has any: all families, all tables but local, without the
// routes the kernel makes from addresses or learns from router
// advertisements, and without IPv6 link-local addresses (every link
// makes its own from its MAC).
func (h *Handle) HostConfigs() (map[string]plan.HostConfig, error) {
	_, hc, err := h.list(true)
	return hc, err
}

// hostConfigs builds HostConfigs from an address dump of every family and
// a dump of the routes of every table.
func (h *Handle) hostConfigs(names map[int]string, addrs []netlink.Addr) (map[string]plan.HostConfig, error) {
	out := map[string]plan.HostConfig{}
	for _, a := range addrs {
		ha, ok := hostAddr(a)
		if !ok {
			continue
		}
		name := names[a.LinkIndex]
		c := out[name]
		c.Addrs = append(c.Addrs, ha)
		out[name] = c
	}
	routes, err := dump(func() ([]netlink.Route, error) {
		return h.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		hr, ok := hostRoute(r)
		if !ok {
			continue
		}
		name := names[r.LinkIndex]
		c := out[name]
		c.Routes = append(c.Routes, hr)
		out[name] = c
	}
	return out, nil
}

func hostAddr(a netlink.Addr) (plan.HostAddr, bool) {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return plan.HostAddr{}, false
	}
	ip = ip.Unmap()
	if ip.Is6() && ip.IsLinkLocalUnicast() || ip.IsLoopback() {
		return plan.HostAddr{}, false
	}
	ones, _ := a.Mask.Size()
	ha := plan.HostAddr{
		Prefix:       netip.PrefixFrom(ip, ones),
		Label:        a.Label,
		Scope:        a.Scope,
		Flags:        a.Flags & settableAddrFlags,
		ValidLft:     uint32(a.ValidLft),
		PreferredLft: uint32(a.PreferedLft),
	}
	if a.ValidLft == 0 && a.PreferedLft == 0 {
		ha.ValidLft, ha.PreferredLft = plan.Forever, plan.Forever
	}
	if b, ok := netip.AddrFromSlice(a.Broadcast.To4()); ok && ip.Is4() {
		ha.Broadcast = b
	}
	return ha, true
}

func hostRoute(r netlink.Route) (plan.HostRoute, bool) {
	if r.LinkIndex == 0 || r.Table == unix.RT_TABLE_LOCAL || r.Protocol == protoKernel || r.Protocol == protoRA || len(r.MultiPath) > 0 {
		return plan.HostRoute{}, false
	}
	hr := plan.HostRoute{
		Table: r.Table, Metric: r.Priority, Protocol: int(r.Protocol),
		Scope: int(r.Scope), Type: r.Type, OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0, MTU: r.MTU,
	}
	if r.Dst != nil {
		ip, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		hr.Dst = netip.PrefixFrom(ip.Unmap(), ones)
	} else if r.Family == unix.AF_INET6 {
		hr.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	} else {
		hr.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	if ip, ok := netip.AddrFromSlice(r.Gw); ok {
		hr.Gw = ip.Unmap()
	}
	if ip, ok := netip.AddrFromSlice(r.Src); ok {
		hr.Src = ip.Unmap()
	}
	return hr, true
}

// toNetlinkAddr makes an address for link index, relabelled for it (an
// IPv4 label starts with its link's name: eth0, eth0:1). On a bridge
// (toBridge) an IPv6 address skips duplicate address detection: it was
// proven unique on this very link, and a tentative address would not be
// reachable for a second.
func toNetlinkAddr(a plan.HostAddr, index int, from, to string, permanent, toBridge bool) *netlink.Addr {
	na := &netlink.Addr{
		IPNet:     &net.IPNet{IP: a.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(a.Prefix.Bits(), a.Prefix.Addr().BitLen())},
		LinkIndex: index,
		Scope:     a.Scope,
		Flags:     a.Flags,
	}
	if a.Prefix.Addr().Is6() && toBridge {
		na.Flags |= unix.IFA_F_NODAD
	}
	if a.Broadcast.IsValid() {
		na.Broadcast = a.Broadcast.AsSlice()
	} else if a.Prefix.Addr().Is4() {
		// No broadcast address, as it was: the library's "unset" would
		// derive one.
		na.Broadcast = net.IPv4zero
	}
	if a.Label != "" && a.Prefix.Addr().Is4() {
		if rest, ok := strings.CutPrefix(a.Label, from); ok {
			na.Label = to + rest
		} else {
			na.Label = a.Label
		}
	}
	if a.Dynamic() && !permanent {
		na.ValidLft, na.PreferedLft = int(a.ValidLft), int(a.PreferredLft)
		if na.PreferedLft == 0 {
			// 0 means deprecated to the kernel but "not given" to the
			// library; a deprecated address stays deprecated on 1 s.
			na.PreferedLft = 1
		}
	}
	return na
}

func toNetlinkRoute(r plan.HostRoute, index int) *netlink.Route {
	nr := &netlink.Route{
		LinkIndex: index, Table: r.Table, Priority: r.Metric,
		Protocol: netlink.RouteProtocol(r.Protocol), Scope: netlink.Scope(r.Scope), Type: r.Type, MTU: r.MTU,
	}
	if r.Dst.Bits() != 0 || r.Dst.Addr().Is6() {
		nr.Dst = &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())}
	}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	}
	if r.Src.IsValid() {
		nr.Src = r.Src.AsSlice()
	}
	if r.OnLink {
		nr.Flags |= int(netlink.FLAG_ONLINK)
	}
	return nr
}

// Convert makes uplink a port of bridge and moves the host's configuration
// to the bridge, in the order that keeps the host reachable:
//
//  1. the addresses are added to the bridge (it has the uplink's MAC);
//  2. the uplink is enslaved: from here frames for the host arrive through
//     the bridge, which holds the addresses already;
//  3. every route is replaced by the same route through the bridge
//     (`ip route replace`: the default route is never missing);
//  4. the addresses are deleted from the uplink.
//
// With move "none" no address or route goes to the bridge; "static" adds
// them without lifetimes. Established TCP connections survive: sockets are
// bound to addresses, not links. If a step fails, the steps done are undone.
func (h *Handle) Convert(uplink string, u plan.Uplink) (err error) {
	ul, err := h.byName(uplink)
	if err != nil {
		return err
	}
	br, err := h.byName(u.Bridge)
	if err != nil {
		return err
	}
	uIdx, bIdx := ul.Attrs().Index, br.Attrs().Index
	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				err = errors.Join(err, undo[i]())
			}
		}
	}()
	moved := u.Move != "none"
	if moved {
		for _, a := range u.Config.Addrs {
			na := toNetlinkAddr(a, bIdx, uplink, u.Bridge, u.Move == "static", true)
			if err := h.nl.AddrReplace(br, na); err != nil {
				return fmt.Errorf("adding address %s to %q: %w", a.Prefix, u.Bridge, err)
			}
			undo = append(undo, func() error { return ignoreMissing(h.nl.AddrDel(br, na)) })
		}
	}
	if err := h.nl.LinkSetMasterByIndex(ul, bIdx); err != nil {
		return fmt.Errorf("enslaving %q to bridge %q: %w", uplink, u.Bridge, err)
	}
	undo = append(undo, func() error { return h.nl.LinkSetNoMaster(ul) })
	if moved {
		for _, r := range routesInOrder(u.Config.Routes) {
			nr := toNetlinkRoute(r, bIdx)
			if err := h.nl.RouteReplace(nr); err != nil {
				return fmt.Errorf("moving route %q to %q: %w", r, u.Bridge, err)
			}
			old := toNetlinkRoute(r, uIdx)
			undo = append(undo, func() error { return h.nl.RouteReplace(old) })
		}
	}
	for _, a := range u.Config.Addrs {
		na := toNetlinkAddr(a, uIdx, uplink, uplink, false, false)
		if err := ignoreMissing(h.nl.AddrDel(ul, na)); err != nil {
			return fmt.Errorf("deleting address %s from %q: %w", a.Prefix, uplink, err)
		}
		undo = append(undo, func() error { return h.nl.AddrReplace(ul, na) })
	}
	return nil
}

// Release gives an uplink back its configuration (u.Config, from before
// the conversion) and frees it from its bridge, in the order that keeps
// the host reachable: addresses on the uplink; routes replaced through the
// uplink (a port can send; frames still arrive through the bridge, which
// has the addresses); addresses off the bridge; nomaster last, when the
// uplink holds everything. Measured with pings every 2 ms, freeing the
// uplink first lost a few: replies followed the bridge's routes, whose
// port had just left. An address the bridge
// still holds keeps the lifetime it has now (a DHCP lease renewed since);
// a dynamic one that expired meanwhile is not brought back. With
// u.Bridge "" (the bridge is gone) only the configuration is restored.
func (h *Handle) Release(uplink string, u plan.Uplink) (err error) {
	ul, err := h.byName(uplink)
	if err != nil {
		return err
	}
	var br netlink.Link
	now := map[netip.Prefix]plan.HostAddr{}
	if u.Bridge != "" {
		if br, err = h.byName(u.Bridge); err != nil {
			return err
		}
		list, err := h.nl.AddrList(br, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("listing addresses of %q: %w", u.Bridge, err)
		}
		for _, na := range list {
			if a, ok := hostAddr(na); ok {
				now[a.Prefix] = a
			}
		}
	}
	uIdx := ul.Attrs().Index
	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				err = errors.Join(err, undo[i]())
			}
		}
	}()
	for _, a := range u.Config.Addrs {
		if cur, ok := now[a.Prefix]; ok {
			a.ValidLft, a.PreferredLft = cur.ValidLft, cur.PreferredLft
		} else if a.Dynamic() {
			// Not on the bridge (hostAddress none, or it expired there):
			// what is left of its lifetime since it was taken.
			left := int64(a.ValidLft) - int64(time.Since(u.Taken).Seconds())
			if u.Taken.IsZero() || left <= 0 {
				continue
			}
			pref := int64(a.PreferredLft) - int64(time.Since(u.Taken).Seconds())
			a.ValidLft, a.PreferredLft = uint32(left), uint32(max(pref, 0))
		}
		na := toNetlinkAddr(a, uIdx, u.Bridge, uplink, false, false)
		if err := h.nl.AddrReplace(ul, na); err != nil {
			return fmt.Errorf("adding address %s to %q: %w", a.Prefix, uplink, err)
		}
		undo = append(undo, func() error { return ignoreMissing(h.nl.AddrDel(ul, na)) })
	}
	for _, r := range routesInOrder(u.Config.Routes) {
		if err := h.nl.RouteReplace(toNetlinkRoute(r, uIdx)); err != nil {
			return fmt.Errorf("moving route %q back to %q: %w", r, uplink, err)
		}
		if br != nil {
			back := toNetlinkRoute(r, br.Attrs().Index)
			undo = append(undo, func() error { return h.nl.RouteReplace(back) })
		}
	}
	if br != nil {
		for _, a := range u.Config.Addrs {
			cur, ok := now[a.Prefix]
			if !ok {
				continue
			}
			na := toNetlinkAddr(cur, br.Attrs().Index, u.Bridge, u.Bridge, false, true)
			if err := ignoreMissing(h.nl.AddrDel(br, na)); err != nil {
				return fmt.Errorf("deleting address %s from %q: %w", a.Prefix, u.Bridge, err)
			}
			undo = append(undo, func() error { return h.nl.AddrReplace(br, na) })
		}
	}
	if br != nil && ul.Attrs().MasterIndex == br.Attrs().Index {
		if err := h.nl.LinkSetNoMaster(ul); err != nil {
			return fmt.Errorf("releasing %q from bridge %q: %w", uplink, u.Bridge, err)
		}
		bIdx := br.Attrs().Index
		undo = append(undo, func() error { return h.nl.LinkSetMasterByIndex(ul, bIdx) })
	}
	if u.Config.MTU != 0 && ul.Attrs().MTU != u.Config.MTU {
		if err := h.nl.LinkSetMTU(ul, u.Config.MTU); err != nil {
			return fmt.Errorf("setting mtu %d on %q: %w", u.Config.MTU, uplink, err)
		}
	}
	return nil
}

// routesInOrder puts routes without a gateway first: a route through a
// gateway needs the route that reaches the gateway.
func routesInOrder(rs []plan.HostRoute) []plan.HostRoute {
	out := make([]plan.HostRoute, 0, len(rs))
	for _, r := range rs {
		if !r.Gw.IsValid() {
			out = append(out, r)
		}
	}
	for _, r := range rs {
		if r.Gw.IsValid() {
			out = append(out, r)
		}
	}
	return out
}

func ignoreMissing(err error) error {
	if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// Bridge attributes (if_link.h) that send bridged traffic through
// iptables, ip6tables and arptables when br_netfilter is loaded.
const (
	iflaBrNFCallIPTables  = 36
	iflaBrNFCallIP6Tables = 37
	iflaBrNFCallARPTables = 38
)

// SetBridgeNF turns off the bridge's own nf_call_iptables, ip6tables and
// arptables: `ip link set NAME type bridge nf_call_iptables 0 ...`. A
// kernel without bridge netfilter ignores the attributes.
func (h *Handle) SetBridgeNF(name string, on bool) error {
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	v := uint8(0)
	if on {
		v = 1
	}
	if err := h.changeBridge(l.Attrs().Index, []int{iflaBrNFCallIPTables, iflaBrNFCallIP6Tables, iflaBrNFCallARPTables}, v); err != nil {
		return fmt.Errorf("setting nf_call_iptables=%d on bridge %q: %w", v, name, err)
	}
	return nil
}

// changeBridge sets the bridge attributes attrs (IFLA_BR_*) of the bridge
// with index to v, and nothing else: one RTM_NEWLINK carrying only them
// (the library's LinkModify sends back every attribute it read, which
// the kernel may refuse, e.g. with EBUSY).
func (h *Handle) changeBridge(index int, attrs []int, v uint8) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	sock, err := nl.GetNetlinkSocketAt(h.ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("opening netlink socket: %w", err)
	}
	defer sock.Close()
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sock}}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	for _, a := range attrs {
		data.AddRtAttr(a, []byte{v})
	}
	req.AddData(info)
	_, err = req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// BridgeNF reads a bridge's nf_call_* attributes: "on" if any is set,
// "off" if none is, "" when the kernel does not report them (no bridge
// netfilter).
func (h *Handle) BridgeNF(name string) (string, error) {
	sock, err := nl.GetNetlinkSocketAt(h.ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return "", fmt.Errorf("opening netlink socket: %w", err)
	}
	defer sock.Close()
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sock}}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return "", fmt.Errorf("reading bridge %q: %w", name, err)
	}
	state := ""
	for _, m := range msgs {
		ifi := nl.DeserializeIfInfomsg(m)
		attrs, err := nl.ParseRouteAttr(m[ifi.Len():])
		if err != nil {
			return "", fmt.Errorf("reading bridge %q: %w", name, err)
		}
		for _, a := range attrs {
			if a.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_LINKINFO {
				continue
			}
			infos, _ := nl.ParseRouteAttr(a.Value)
			for _, info := range infos {
				if info.Attr.Type&^unix.NLA_F_NESTED != nl.IFLA_INFO_DATA {
					continue
				}
				data, _ := nl.ParseRouteAttr(info.Value)
				for _, d := range data {
					switch d.Attr.Type {
					case iflaBrNFCallIPTables, iflaBrNFCallIP6Tables, iflaBrNFCallARPTables:
						if state == "" {
							state = "off"
						}
						if len(d.Value) > 0 && d.Value[0] != 0 {
							state = "on"
						}
					}
				}
			}
		}
	}
	return state, nil
}

// Get returns one link as List would, without its addresses: what a late
// tap's adoption needs to know, for the price of one request.
func (h *Handle) Get(name string) (Link, bool, error) {
	l, err := h.nl.LinkByName(name)
	if IsNotFound(err) {
		return Link{}, false, nil
	}
	if err != nil {
		return Link{}, false, fmt.Errorf("finding link %q: %w", name, err)
	}
	a := l.Attrs()
	out := Link{Name: a.Name, Index: a.Index, Kind: l.Type(), Alias: a.Alias, MTU: a.MTU, Up: a.Flags&net.FlagUp != 0, HWAddr: a.HardwareAddr.String()}
	if a.MasterIndex != 0 {
		if m, err := h.nl.LinkByIndex(a.MasterIndex); err == nil {
			out.Master = m.Attrs().Name
		}
	}
	return out, true, nil
}
