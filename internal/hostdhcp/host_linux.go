package hostdhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// maxDumpTries bounds the retries of a netlink dump that the kernel
// interrupted because the table changed under it (NLM_F_DUMP_INTR).
const maxDumpTries = 5

// kernelHost is the real host: rtnetlink and UDP sockets in the calling
// process's network namespace.
//
// The address calls belong in internal/kernel/link (where the project keeps
// its netlink use), which has AddAddr but neither replace nor lifetimes;
// they live here, behind the host interface, until it grows them.
type kernelHost struct{}

func newHost() host { return kernelHost{} }

func (kernelHost) link(name string) (net.HardwareAddr, bool, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, false, fmt.Errorf("looking up %q: %w", name, errNoLink)
		}
		return nil, false, fmt.Errorf("looking up %q: %w", name, err)
	}
	a := l.Attrs()
	// IFF_RUNNING is the carrier: a bridge without a running port has
	// none, and what it sends goes nowhere.
	ready := a.RawFlags&unix.IFF_UP != 0 && a.RawFlags&unix.IFF_RUNNING != 0
	return a.HardwareAddr, ready, nil
}

// listen opens a UDP socket on 0.0.0.0:68 bound to the interface (as
// SO_BINDTODEVICE), allowed to broadcast. SO_REUSEADDR lets it share port
// 68 with DHCP clients on other interfaces that set it too (dhclient and
// udhcpc do).
func (kernelHost) listen(name string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			s := int(fd)
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				serr = fmt.Errorf("setting SO_REUSEADDR: %w", serr)
				return
			}
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				serr = fmt.Errorf("setting SO_BROADCAST: %w", serr)
				return
			}
			if serr = unix.BindToDevice(s, name); serr != nil {
				serr = fmt.Errorf("binding to device: %w", serr)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	addr := net.JoinHostPort("0.0.0.0", strconv.Itoa(clientPort))
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("opening the DHCP client socket %s on %q: %w", addr, name, err)
	}
	return pc, nil
}

func (kernelHost) replaceAddr(name string, p netip.Prefix, brd netip.Addr, lifetime time.Duration) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("looking up %q: %w", name, err)
	}
	a := toAddr(p)
	if brd.IsValid() {
		a.Broadcast = brd.AsSlice() // 4 bytes: the kernel ignores a 16-byte IFA_BROADCAST
	}
	// Zero lifetimes send no IFA_CACHEINFO: the kernel then makes the
	// address permanent ("forever"), also when replacing.
	secs := int(lifetime / time.Second)
	a.ValidLft, a.PreferedLft = secs, secs
	if err := netlink.AddrReplace(l, a); err != nil {
		return fmt.Errorf("ip addr replace %s dev %s valid_lft %d: %w", p, name, secs, err)
	}
	return nil
}

func (kernelHost) delAddr(name string, p netip.Prefix) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("looking up %q: %w", name, err)
	}
	// EADDRNOTAVAIL: the address is not there (expired, or never was).
	if err := netlink.AddrDel(l, toAddr(p)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("ip addr del %s dev %s: %w", p, name, err)
	}
	return nil
}

func (kernelHost) defaultGateway(name string) (netip.Addr, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("looking up %q: %w", name, err)
	}
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN, LinkIndex: l.Attrs().Index}
	var routes []netlink.Route
	for range maxDumpTries {
		routes, err = netlink.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("listing the routes through %q: %w", name, err)
	}
	var gw netip.Addr
	best := -1
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if a, ok := addr4(r.Gw); ok && (best == -1 || r.Priority < best) {
			gw, best = a, r.Priority
		}
	}
	return gw, nil
}

func toAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}}
}
