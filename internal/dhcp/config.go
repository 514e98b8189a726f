// Package dhcp is the embedded DHCPv4 server of kvmnet's NAT networks. There
// is one Server per network. It reads requests only as they enter that
// network's bridge through one of its ports, and replies on the bridge alone
// (SO_BINDTODEVICE), so it never answers on the uplink or on another
// network; it acts on a request only for the client that sent it (see
// admit.go). It hands out reserved addresses to the guests that have one and
// pool addresses to everyone else, and keeps its leases in a LeaseStore so a
// restarted server gives every guest the address it had.
package dhcp

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/kvmnet/kvmnet/internal/store"
)

// DefaultLeaseTime is used when Config.LeaseTime is zero; it is also the
// model's default.
const DefaultLeaseTime = time.Hour

// Config is everything one network's DHCP server serves. The zero value of an
// optional field leaves its option out.
type Config struct {
	// Network is the kvmnet network name; it keys the leases in the store
	// and labels log lines.
	Network string
	// Interface is the bridge the server listens on, e.g. "kv-dev". The
	// socket is bound to it, so requests arriving elsewhere never reach us.
	// It cannot change without a restart.
	Interface string
	// ServerIP is the host's address on the bridge, sent as the server
	// identifier (option 54). It is never handed out.
	ServerIP netip.Addr
	// Subnet of the network, e.g. 192.168.100.0/24; gives the subnet mask
	// (option 1). Requests for addresses outside it are refused.
	Subnet netip.Prefix
	// RangeStart and RangeEnd bound the pool, both inclusive, e.g.
	// 192.168.100.100 and 192.168.100.199. Reserved addresses may lie
	// outside the range but must be inside Subnet.
	RangeStart, RangeEnd netip.Addr
	// LeaseTime of every lease (option 51); renewal (58) and rebinding (59)
	// times are the RFC 2131 defaults of 1/2 and 7/8 of it. Zero means
	// DefaultLeaseTime.
	LeaseTime time.Duration
	// Router is the guests' default gateway (option 3), normally ServerIP.
	// Zero sends no router.
	Router netip.Addr
	// DNS servers (option 6), normally ServerIP when the network's DNS
	// forwarder runs. Empty sends none.
	DNS []netip.Addr
	// Domain name (option 15), e.g. "dev.kvm". Empty sends none.
	Domain string
	// MTU for the guests' interface (option 26). Zero sends none.
	MTU int
	// Reservations bind MACs to fixed addresses; a reserved address is
	// never given to any other MAC.
	Reservations []Reservation
	// Ports are the network's guest ports (taps) of the desired state. A
	// MAC configured on a port is served only when its messages enter
	// through that port; see Server.admit.
	Ports []Port
}

// Port is one guest NIC's port on the network's bridge.
type Port struct {
	// Tap is the bridge port's name, e.g. "web1-0".
	Tap string
	// MAC of the guest's NIC behind it, e.g. "52:54:00:00:00:10".
	MAC string
	// Spoofguard is the interface's port security. On, the guest may
	// only ever speak for MAC. Off, the admin trusts it to forward for
	// others (nested guests, a DHCP relay such as a load tester): it may
	// speak for MACs no other port owns, and relay.
	Spoofguard bool
}

// Reservation gives the guest NIC with MAC always the address IP.
type Reservation struct {
	// MAC of the guest's NIC, e.g. "52:54:00:00:00:10".
	MAC string
	// IP it gets; inside the subnet, not the server's or the router's.
	IP netip.Addr
	// Hostname sent to the guest (option 12), normally the VM name.
	// Empty sends none.
	Hostname string
}

// LeaseStore persists leases so they survive a restart. *store.Store
// satisfies it.
type LeaseStore interface {
	// QueueLeases queues changes to the leases, to be written in order
	// and in one transaction with the changes queued with them; the
	// result's Wait returns once they are on disk (see
	// store.Store.QueueLeases).
	QueueLeases(ops ...store.LeaseOp) *store.LeaseCommit
	// Leases returns the leases of network.
	Leases(network string) ([]store.Lease, error)
}

// validate checks c and returns a copy with defaults filled in and MACs in
// canonical form. Errors name the field and what is allowed.
func (c Config) validate() (Config, error) {
	if c.Network == "" {
		return c, fmt.Errorf("dhcp config: network name is empty")
	}
	bad := func(format string, args ...any) (Config, error) {
		return c, fmt.Errorf("dhcp config of network %q: "+format, append([]any{c.Network}, args...)...)
	}
	if c.Interface == "" {
		return bad("interface is empty")
	}
	if !c.Subnet.IsValid() || !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 30 {
		return bad("subnet %q must be an IPv4 prefix of length 30 or shorter", c.Subnet)
	}
	c.Subnet = c.Subnet.Masked()
	if !c.ServerIP.Is4() || !hostAddr(c.Subnet, c.ServerIP) {
		return bad("server address %q must be a host address of subnet %s", c.ServerIP, c.Subnet)
	}
	if c.Router.IsValid() && !hostAddr(c.Subnet, c.Router) {
		return bad("router %q must be a host address of subnet %s", c.Router, c.Subnet)
	}
	if !c.RangeStart.Is4() || !c.RangeEnd.Is4() || !c.Subnet.Contains(c.RangeStart) || !c.Subnet.Contains(c.RangeEnd) {
		return bad("range %s-%s must lie inside subnet %s", c.RangeStart, c.RangeEnd, c.Subnet)
	}
	if c.RangeEnd.Less(c.RangeStart) {
		return bad("range %s-%s ends before it starts", c.RangeStart, c.RangeEnd)
	}
	if c.LeaseTime == 0 {
		c.LeaseTime = DefaultLeaseTime
	}
	if c.LeaseTime < 0 || c.LeaseTime/time.Second > 0xfffffffe {
		return bad("lease time %s must be positive and below 136 years", c.LeaseTime)
	}
	for _, d := range c.DNS {
		if !d.Is4() {
			return bad("DNS server %q is not an IPv4 address", d)
		}
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return bad("MTU %d must be between 68 and 65535 (or 0 to send none)", c.MTU)
	}
	res := make([]Reservation, 0, len(c.Reservations))
	macs, ips := map[string]bool{}, map[netip.Addr]bool{}
	for _, r := range c.Reservations {
		hw, err := net.ParseMAC(r.MAC)
		if err != nil || len(hw) != 6 {
			return bad("reservation MAC %q is not an Ethernet address like 52:54:00:00:00:10", r.MAC)
		}
		r.MAC = hw.String()
		if !r.IP.Is4() || !hostAddr(c.Subnet, r.IP) || r.IP == c.ServerIP || r.IP == c.Router {
			return bad("reserved address %q of %s must be a host address of subnet %s other than the server and router", r.IP, r.MAC, c.Subnet)
		}
		if macs[r.MAC] {
			return bad("MAC %s has two reservations", r.MAC)
		}
		if ips[r.IP] {
			return bad("address %s is reserved twice", r.IP)
		}
		macs[r.MAC], ips[r.IP] = true, true
		res = append(res, r)
	}
	c.Reservations = res
	ports := make([]Port, 0, len(c.Ports))
	taps := map[string]bool{}
	pmacs := map[string]bool{}
	for _, p := range c.Ports {
		hw, err := net.ParseMAC(p.MAC)
		if err != nil || len(hw) != 6 {
			return bad("MAC %q of port %q is not an Ethernet address like 52:54:00:00:00:10", p.MAC, p.Tap)
		}
		p.MAC = hw.String()
		if p.Tap == "" {
			return bad("port of MAC %s has no name", p.MAC)
		}
		if taps[p.Tap] || pmacs[p.MAC] {
			return bad("port %q or MAC %s is listed twice", p.Tap, p.MAC)
		}
		taps[p.Tap], pmacs[p.MAC] = true, true
		ports = append(ports, p)
	}
	c.Ports = ports
	c.DNS = append([]netip.Addr(nil), c.DNS...)
	return c, nil
}

// hostAddr reports whether ip is in p and is neither p's network nor its
// broadcast address.
func hostAddr(p netip.Prefix, ip netip.Addr) bool {
	if !p.Contains(ip) {
		return false
	}
	return ip != p.Addr() && ip != broadcast(p)
}

// broadcast returns the last address of IPv4 prefix p.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		a[i/8] |= 1 << (7 - i%8)
	}
	return netip.AddrFrom4(a)
}
