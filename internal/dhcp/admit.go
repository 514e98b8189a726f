package dhcp

import (
	"bytes"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// A DHCP message names its client in its payload (chaddr, option 61),
// which the sender writes as it likes: port security checks the Ethernet
// source of frames, never what they carry. So the server learns where
// each message really came from (Ingress) and acts on a message only for
// the client that sent it: a guest can neither release nor decline the
// lease of another, nor hold the pool with DECLINEs under made-up MACs.

// Ingress is where a client message entered the network's bridge.
type Ingress struct {
	// Port is the bridge port (the guest's tap) the frame came in
	// through.
	Port string
	// MAC is the frame's Ethernet source.
	MAC net.HardwareAddr
	// IP is the packet's IPv4 source: 0.0.0.0 from a client without an
	// address.
	IP netip.Addr
	// Dst is the packet's IPv4 destination: the broadcast address or the
	// server's. Invalid when unknown (tests).
	Dst netip.Addr
}

// Ignored says why a client message was refused, for counters.
type Ignored struct {
	// Type is the message type, e.g. "DECLINE".
	Type string
	// Reason is one of the Reason constants.
	Reason string
}

// Reasons a client message is ignored.
const (
	// ReasonSource: the packet's source address is outside the network's
	// subnet (and not 0.0.0.0): not a guest of this network.
	ReasonSource = "source"
	// ReasonChaddr: chaddr (or an Ethernet client identifier) differs
	// from the frame's Ethernet source.
	ReasonChaddr = "chaddr"
	// ReasonOtherPort: the MAC belongs to another port, by configuration
	// or by a lease or offer given through that port, or the port has
	// spoofguard and the MAC is not its own.
	ReasonOtherPort = "other-port"
	// ReasonRelay: a relayed message (giaddr set) from a port not trusted
	// to relay (spoofguard off), or whose giaddr is not its sender.
	ReasonRelay = "relay"
	// ReasonDeclineRate: the port sent DECLINEs faster than declineEvery.
	ReasonDeclineRate = "decline-rate"
	// ReasonNotHeld: a DECLINE or RELEASE of an address the client was
	// neither offered nor leased.
	ReasonNotHeld = "not-held"
)

const (
	// declineBurst is how many DECLINEs a port may send at once; a
	// client finding a squatter declines once per address it is given.
	declineBurst = 3
	// declineEvery is how often a port earns another DECLINE.
	declineEvery = time.Minute
	// ownerSweepMin is the fewest port records kept before sweeping
	// those of MACs that hold nothing.
	ownerSweepMin = 1024
	// ignoredLogEvery rate-limits the warning about refused messages,
	// which a hostile guest can send at line rate.
	ignoredLogEvery = time.Minute
)

// bucket is a token bucket of DECLINEs: declineBurst tokens, one more per
// declineEvery.
type bucket struct {
	tokens float64
	at     time.Time
}

func (b *bucket) take(now time.Time) bool {
	if now.After(b.at) {
		b.tokens += float64(now.Sub(b.at)) / float64(declineEvery)
		if b.tokens > declineBurst {
			b.tokens = declineBurst
		}
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// forUs reports whether a request to dst is addressed to this server:
// a guest may talk DHCP to servers elsewhere, through the gateway.
func (s *Server) forUs(dst netip.Addr) bool {
	return !dst.IsValid() || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || dst == s.cfg.ServerIP || dst == broadcast(s.cfg.Subnet)
}

// admit decides whether m, which came in through in, may be acted on, and
// returns why not ("" when it may); caller holds mu.
func (s *Server) admit(m *dhcpv4.DHCPv4, in Ingress, now time.Time) string {
	c := &s.cfg
	// Only the network's own guests: a client without an address yet,
	// or one inside the subnet.
	if in.IP.IsValid() && !in.IP.IsUnspecified() && !c.Subnet.Contains(in.IP) {
		return ReasonSource
	}
	mac := m.ClientHWAddr.String()
	port, configured := s.portByTap[in.Port]
	if gi := addr4(m.GatewayIPAddr); gi.IsValid() {
		// A relay speaks for clients behind it: only a guest the admin
		// trusts with other MACs may be one, and only from its own
		// address (replies go to giaddr: no reflecting them elsewhere).
		if !configured || port.Spoofguard || gi != in.IP {
			return ReasonRelay
		}
	} else {
		if !bytes.Equal(m.ClientHWAddr, in.MAC) {
			return ReasonChaddr
		}
		// A client identifier of type Ethernet (RFC 2132 9.14) must be
		// the same address; leases are keyed by chaddr, so other kinds
		// of identifier name nothing the server acts on.
		if id := m.Options.Get(dhcpv4.OptionClientIdentifier); len(id) == 7 && id[0] == byte(iana.HWTypeEthernet) && !bytes.Equal(id[1:], in.MAC) {
			return ReasonChaddr
		}
	}
	if p, ok := s.portByMAC[mac]; ok && p.Tap != in.Port {
		return ReasonOtherPort
	}
	if configured && port.Spoofguard && port.MAC != mac {
		// The bridge drops such frames too, but the server reads them
		// off the port before the bridge does.
		return ReasonOtherPort
	}
	if o, ok := s.owner[mac]; ok && o != in.Port && s.alloc.active(mac, now) {
		return ReasonOtherPort
	}
	return ""
}

// learn records that mac got an offer or lease through in.Port; caller
// holds mu. Configured MACs need no record: their port is configured.
func (s *Server) learn(mac string, in Ingress, now time.Time) {
	if _, ok := s.portByMAC[mac]; ok || in.Port == "" {
		return
	}
	s.owner[mac] = in.Port
	if len(s.owner) < s.ownerSweepAt {
		return
	}
	// Records of MACs without offer or lease protect nothing: drop them
	// now and then, so a guest cycling through MACs cannot grow the map
	// without bound.
	for m := range s.owner {
		if !s.alloc.active(m, now) {
			delete(s.owner, m)
		}
	}
	s.ownerSweepAt = 2*len(s.owner) + ownerSweepMin
}

// refuse counts and logs a message admit refused; caller holds mu.
func (s *Server) refuse(m *dhcpv4.DHCPv4, in Ingress, why string, now time.Time) {
	k := Ignored{Type: m.MessageType().String(), Reason: why}
	s.ignored[k]++
	if s.onIgnored != nil {
		s.onIgnored(k)
	}
	log := s.log.Debug
	if now.Sub(s.lastIgnored) >= ignoredLogEvery {
		// The first in a while is worth the admin's attention: a guest
		// speaks for another or floods DECLINEs.
		s.lastIgnored = now
		log = s.log.Warn
	}
	log("dhcp message ignored", "type", k.Type, "reason", why, "chaddr", m.ClientHWAddr.String(), "port", in.Port, "src_mac", in.MAC.String(), "src", in.IP)
}

// IgnoredCounts returns how many client messages were refused, by type and
// reason, since New.
func (s *Server) IgnoredCounts() map[Ignored]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[Ignored]uint64, len(s.ignored))
	for k, v := range s.ignored {
		out[k] = v
	}
	return out
}
