package hostdhcp

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// infiniteLease is the lease time 0xffffffff seconds, which RFC 2132 section 9.2
// defines as "infinity": such an address goes on the interface without a
// lifetime and is never renewed.
const infiniteLease = time.Duration(math.MaxUint32) * time.Second

// minRenew is the shortest wait before the first RENEW. A server that
// announces T1 = 0 (or a lease of a second) must not turn Run into a busy
// loop of requests.
const minRenew = time.Second

// lease is one DHCPACK turned into what the kernel and the timers need.
type lease struct {
	// addr is yiaddr with the length of the subnet mask (option 1).
	addr netip.Prefix
	// brd is the broadcast address: option 28, or the one the prefix
	// implies; invalid for /31 and /32, which have none.
	brd netip.Addr
	// server is the server identifier (option 54), where RENEW goes.
	server netip.Addr
	// router is the first router of option 3, only reported: routes are
	// kvmnet's business, not this package's.
	router netip.Addr
	// start is when the REQUEST that got this ACK was sent. RFC 2131
	// section 4.4.1: the lease runs from then, not from the ACK's arrival.
	start time.Time
	// length is the lease time (option 51); infiniteLease for ever.
	length time.Duration
	// t1 and t2 are the renewal and rebinding times, counted from start.
	t1, t2 time.Duration
}

// renewAt is T1, when the client asks its server to extend the lease.
func (l *lease) renewAt() time.Time { return l.start.Add(l.t1) }

// rebindAt is T2, when the client asks any server.
func (l *lease) rebindAt() time.Time { return l.start.Add(l.t2) }

// expiry is the end of the lease, when the kernel drops the address.
func (l *lease) expiry() time.Time { return l.start.Add(l.length) }

// infinite reports whether the lease never ends.
func (l *lease) infinite() bool { return l.length >= infiniteLease }

// lifetime is what valid_lft and preferred_lft must be at now: the rest of
// the lease, rounded down to whole seconds as the kernel counts them. Zero
// means "forever" (the lease is infinite); an ended lease gives a second
// rather than zero, which the kernel would read as forever.
func (l *lease) lifetime(now time.Time) time.Duration {
	if l.infinite() {
		return 0
	}
	left := l.expiry().Sub(now).Truncate(time.Second)
	if left < time.Second {
		return time.Second
	}
	return left
}

// parseACK turns a DHCPACK into a lease that started at sent. prev, when not
// nil, is the lease the ACK renews: some servers (Windows, as the comment on
// nclient4's Renew says) leave options out of a renewal ACK, and what the
// previous ACK said still holds then.
func parseACK(ack *dhcpv4.DHCPv4, sent time.Time, prev *lease) (*lease, error) {
	ip, ok := addr4(ack.YourIPAddr)
	if !ok {
		return nil, fmt.Errorf("DHCPACK from %s carries no address (yiaddr %v)", ack.ServerIdentifier(), ack.YourIPAddr)
	}
	l := &lease{start: sent}
	l.server, _ = addr4(ack.ServerIdentifier())
	l.router, _ = firstAddr4(ack.Router())
	l.brd, _ = addr4(ack.BroadcastAddress())
	bits := maskBits(ack.SubnetMask())
	if prev != nil && prev.addr.Addr() == ip {
		if !l.server.IsValid() {
			l.server = prev.server
		}
		if !l.router.IsValid() {
			l.router = prev.router
		}
		if bits < 0 {
			bits = prev.addr.Bits()
			if !l.brd.IsValid() {
				l.brd = prev.brd
			}
		}
	}
	if !l.server.IsValid() {
		return nil, fmt.Errorf("DHCPACK for %s carries no server identifier (option 54)", ip)
	}
	if bits < 0 {
		// RFC 2132 section 3.3 makes option 1 optional; hosts then fall
		// back to the classful mask (dhclient does the same).
		bits = maskBits(net.IP(ip.AsSlice()).DefaultMask())
	}
	l.addr = netip.PrefixFrom(ip, bits)
	if !l.brd.IsValid() {
		l.brd = broadcast(l.addr)
	}
	if ack.Options.Get(dhcpv4.OptionIPAddressLeaseTime) == nil {
		// RFC 2131 table 3: a DHCPACK to a DHCPREQUEST MUST carry it.
		return nil, fmt.Errorf("DHCPACK for %s from %s carries no lease time (option 51)", ip, l.server)
	}
	l.length = ack.IPAddressLeaseTime(0)
	l.t1, l.t2 = timers(l.length, ack.IPAddressRenewalTime(0), ack.IPAddressRebindingTime(0))
	return l, nil
}

// timers returns T1 and T2 for a lease of length, from options 58 and 59
// when they make sense (zero means absent) and otherwise from the defaults
// of RFC 2131 section 4.4.5: half the lease and seven eighths of it. They
// always satisfy minRenew <= T1 <= T2 <= length (unless length itself is
// shorter than minRenew). An infinite lease gives infinite timers.
func timers(length, opt58, opt59 time.Duration) (t1, t2 time.Duration) {
	if length >= infiniteLease {
		return infiniteLease, infiniteLease
	}
	t2 = length * 7 / 8
	if opt59 > 0 && opt59 < length {
		t2 = opt59
	}
	t1 = length / 2
	if opt58 > 0 && opt58 <= t2 {
		t1 = opt58
	}
	t1 = min(t1, t2)
	if t1 < minRenew {
		t1 = min(minRenew, length)
		t2 = max(t2, t1)
	}
	return t1, t2
}

// retryAt is when to send the next RENEW or REBIND after one went
// unanswered at now, when the state ends at limit (T2 for RENEWING, the
// lease's end for REBINDING). RFC 2131 section 4.4.5: half the time left,
// but at least 60 seconds (never past limit).
func retryAt(now, limit time.Time) time.Time {
	d := max(limit.Sub(now)/2, 60*time.Second)
	if t := now.Add(d); t.Before(limit) {
		return t
	}
	return limit
}

// retransmit is how long to wait for a reply after the try-th transmission
// (0 for the first) of one message, RFC 2131 section 4.1: 4 s, doubled on
// each retransmission up to 64 s, each randomised by jitter (which the RFC
// wants uniform in [-1 s, +1 s]).
func retransmit(try int, jitter time.Duration) time.Duration {
	d := 64 * time.Second
	if try < 4 {
		d = 4 * time.Second << try
	}
	return d + jitter
}

// addr4 converts a packet's address field; 0.0.0.0, nil and anything that
// is not IPv4 give false.
func addr4(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a, true
}

func firstAddr4(ips []net.IP) (netip.Addr, bool) {
	if len(ips) == 0 {
		return netip.Addr{}, false
	}
	return addr4(ips[0])
}

// maskBits is the prefix length of an IPv4 netmask, or -1 when m is absent
// or not contiguous.
func maskBits(m net.IPMask) int {
	if len(m) != net.IPv4len {
		return -1
	}
	ones, bits := m.Size()
	if bits == 0 {
		return -1
	}
	return ones
}

// broadcast is the directed broadcast address of p, as `ip addr add ... brd +`
// computes it; /31 and /32 have none (RFC 3021).
func broadcast(p netip.Prefix) netip.Addr {
	if p.Bits() >= 31 {
		return netip.Addr{}
	}
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}
