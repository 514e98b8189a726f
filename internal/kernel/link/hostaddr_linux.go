package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// State reports a link's MAC and whether it can carry traffic: up and
// with carrier (IFF_UP and IFF_RUNNING; a bridge without a running port
// has no carrier, and what it sends goes nowhere). A missing link is an
// error for which IsNotFound holds.
func (h *Handle) State(name string) (net.HardwareAddr, bool, error) {
	l, err := h.nl.LinkByName(name)
	if err != nil {
		return nil, false, fmt.Errorf("looking up %q: %w", name, err)
	}
	a := l.Attrs()
	return a.HardwareAddr, a.RawFlags&unix.IFF_UP != 0 && a.RawFlags&unix.IFF_RUNNING != 0, nil
}

// ReplaceAddr is `ip addr replace P brd B dev NAME valid_lft L
// preferred_lft L`; lifetime 0 means forever. brd may be invalid (none).
func (h *Handle) ReplaceAddr(name string, p netip.Prefix, brd netip.Addr, lifetime time.Duration) error {
	l, err := h.nl.LinkByName(name)
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
	if err := h.nl.AddrReplace(l, a); err != nil {
		return fmt.Errorf("ip addr replace %s dev %s valid_lft %d: %w", p, name, secs, err)
	}
	return nil
}

// DelAddrIfPresent is `ip addr del P dev NAME`; an address that is not
// there (expired, or never was) is no error.
func (h *Handle) DelAddrIfPresent(name string, p netip.Prefix) error {
	l, err := h.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("looking up %q: %w", name, err)
	}
	if err := h.nl.AddrDel(l, toAddr(p)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("ip addr del %s dev %s: %w", p, name, err)
	}
	return nil
}

// DefaultGatewayVia returns the gateway of the IPv4 default route through
// link name with the lowest metric in the main table, or an invalid
// address when there is none.
func (h *Handle) DefaultGatewayVia(name string) (netip.Addr, error) {
	l, err := h.nl.LinkByName(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("looking up %q: %w", name, err)
	}
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN, LinkIndex: l.Attrs().Index}
	routes, err := dump(func() ([]netlink.Route, error) {
		return h.nl.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
	})
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
		a, ok := netip.AddrFromSlice(r.Gw)
		if ok && a.Unmap().Is4() && (best == -1 || r.Priority < best) {
			gw, best = a.Unmap(), r.Priority
		}
	}
	return gw, nil
}

// ByIndex returns the name of the link with ifindex index and the index
// of its master (0 when it has none).
func (h *Handle) ByIndex(index int) (name string, master int, err error) {
	l, err := h.nl.LinkByIndex(index)
	if err != nil {
		return "", 0, fmt.Errorf("looking up link %d: %w", index, err)
	}
	return l.Attrs().Name, l.Attrs().MasterIndex, nil
}
