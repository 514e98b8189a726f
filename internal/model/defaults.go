package model

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Defaults that Parse fills in. They are exported so that tools which build
// a Config in code can derive the same names.

// DefaultLease is the DHCP lease time when dhcp.lease is not given.
const DefaultLease = time.Hour

// DefaultBridge returns the bridge name of a network without `bridge:`:
// "kv-" + name, cut to 15 characters (IFNAMSIZ-1). Two long names that
// share their first 12 characters give the same bridge name; Parse then
// asks for an explicit `bridge:`.
func DefaultBridge(network string) string {
	return cut("kv-"+network, ifNameSize-1)
}

// DefaultTap returns the tap name of interface index of a VM without
// `tap:`: name + "-" + index (web1-0). When that is longer than 15
// characters the name part is cut (and a '-' it then ends with dropped),
// never the index, so that the interfaces of one VM keep distinct names. Names of different VMs that share a
// prefix can still collide; Parse then asks for an explicit `tap:`.
func DefaultTap(vm string, index int) string {
	suffix := "-" + strconv.Itoa(index)
	return strings.TrimRight(cut(vm, ifNameSize-1-len(suffix)), "-") + suffix
}

// DefaultDHCPRange returns the DHCP range of a subnet without dhcp.range:
// the upper half of the subnet without its broadcast address (for a /24,
// .128-.254). When the gateway lies inside that range, the range is the
// larger part on either side of it. ok is false when no address is left,
// or the subnet is not an IPv4 subnet of /30 or shorter.
func DefaultDHCPRange(subnet netip.Prefix, gateway netip.Addr) (start, end netip.Addr, ok bool) {
	if !subnet.Addr().Is4() || subnet.Bits() > 30 {
		return netip.Addr{}, netip.Addr{}, false
	}
	base := u32(subnet.Masked().Addr())
	size := uint32(1) << (32 - subnet.Bits()) // 0 for /0, where the shifts wrap
	lo, hi := base+size/2, base+size-2
	if subnet.Bits() == 0 {
		lo, hi = 1<<31, 1<<32-2
	}
	if gateway.Is4() {
		g := u32(gateway)
		if lo <= g && g <= hi {
			// Keep the larger side; on a tie, the upper one.
			if g-lo > hi-g {
				hi = g - 1
			} else {
				lo = g + 1
			}
		}
	}
	if lo > hi {
		return netip.Addr{}, netip.Addr{}, false
	}
	return addrFrom(lo), addrFrom(hi), true
}

// cut shortens s to at most n bytes.
func cut(s string, n int) string {
	if n < 0 {
		n = 0
	}
	if len(s) > n {
		return s[:n]
	}
	return s
}
