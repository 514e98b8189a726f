package dhcp

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// lease gets mac a lease through the server as its client would, and
// returns the address.
func (ts *testServer) lease(mac string) string {
	ts.t.Helper()
	p := ts.send(discover(ts.t, mac))
	if p == nil {
		ts.t.Fatalf("no offer for %s", mac)
	}
	ip := p.msg.YourIPAddr.String()
	wantReply(ts.t, ts.send(request(ts.t, mac, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(ip))))),
		dhcpv4.MessageTypeAck, ip, "255.255.255.255:68")
	return ip
}

func release(t *testing.T, mac, ip string) *dhcpv4.DHCPv4 {
	return request(t, mac, dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(ip4(ip)))
}

func decline(t *testing.T, mac, ip string) *dhcpv4.DHCPv4 {
	return request(t, mac, dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(ip))))
}

// TestSpoofedRelease: a guest sends a RELEASE naming another guest's MAC
// and address. Whether it forges only chaddr or the Ethernet source too,
// whether the victim is configured or not, the victim keeps its lease.
func TestSpoofedRelease(t *testing.T) {
	ts := newTestServer(t, newMemStore(), nil)
	victimIP := ts.lease(macA)   // unknown guest, port vm-0a
	resIP := ts.lease(macRes)    // configured guest, port web1-0
	attackerIP := ts.lease(macB) // the attacker, port vm-0b
	attacker := netip.MustParseAddr(attackerIP)
	for _, c := range []struct {
		name, mac, ip string
		src           net.HardwareAddr
		why           string
	}{
		{"chaddr forged", macA, victimIP, hw(macB), ReasonChaddr},
		{"chaddr and source forged", macA, victimIP, hw(macA), ReasonOtherPort},
		{"configured victim, chaddr forged", macRes, resIP, hw(macB), ReasonChaddr},
		{"configured victim, both forged", macRes, resIP, hw(macRes), ReasonOtherPort},
	} {
		before := ts.IgnoredCounts()[Ignored{Type: "RELEASE", Reason: c.why}]
		ts.sendFrom(Ingress{Port: "vm-0b", MAC: c.src, IP: attacker}, release(t, c.mac, c.ip))
		if l, ok := ts.store.get(c.mac); !ok || !l.Expiry.Equal(t0.Add(time.Hour)) {
			t.Errorf("%s: the victim's lease changed to %+v (stored %v)", c.name, l, ok)
		}
		if got := ts.IgnoredCounts()[Ignored{Type: "RELEASE", Reason: c.why}]; got != before+1 {
			t.Errorf("%s: ignored RELEASE (%s) counted %d, want %d", c.name, c.why, got, before+1)
		}
	}
	// The victims still renew, and nobody else gets their addresses.
	for _, c := range []struct{ mac, ip string }{{macA, victimIP}, {macRes, resIP}} {
		wantReply(t, ts.send(request(t, c.mac, dhcpv4.WithClientIP(ip4(c.ip)))), dhcpv4.MessageTypeAck, c.ip, c.ip+":68")
	}
	if p := ts.send(request(t, macC, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(victimIP))))); p == nil || p.msg.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("the victim's address was not refused to a newcomer: %v", p)
	}
	// The owner itself may release.
	ts.send(release(t, macA, victimIP))
	if l, _ := ts.store.get(macA); !l.Expiry.Equal(t0) {
		t.Errorf("the owner's own RELEASE was not taken: %+v", l)
	}
}

// TestDeclineFlood: a guest sends DECLINEs with made-up MACs for every
// pool address, then with its own MAC for every address it is offered.
// Another guest still gets a lease, and keeps the one it has.
func TestDeclineFlood(t *testing.T) {
	ts := newTestServer(t, newMemStore(), func(c *Config) {
		c.RangeEnd = netip.MustParseAddr("10.0.0.120")
	})
	victimIP := ts.lease(macA)
	pool := []string{}
	for ip := netip.MustParseAddr("10.0.0.100"); ip.Compare(netip.MustParseAddr("10.0.0.120")) <= 0; ip = ip.Next() {
		pool = append(pool, ip.String())
	}
	// The attacker's own MAC: declining what it was offered works a few
	// times, then the port is out of DECLINEs.
	taken := 0
	for range pool {
		p := ts.send(discover(t, macB))
		if p == nil {
			t.Fatal("attacker got no offer")
		}
		before := len(ts.alloc.declined)
		ts.send(decline(t, macB, p.msg.YourIPAddr.String()))
		if len(ts.alloc.declined) > before {
			taken++
		}
	}
	if taken != declineBurst {
		t.Errorf("the attacker declined %d addresses at once, want %d", taken, declineBurst)
	}
	// Made-up MACs, as chaddr only, then as the source too (spoofguard
	// off or a guest kvmnet does not know), once the port has DECLINEs
	// again: none is taken.
	used := len(ts.alloc.declined)
	ts.clock = ts.clock.Add(declineBurst * declineEvery)
	for i, ip := range pool {
		fake := net.HardwareAddr{0x02, 0, 0, 0, 1, byte(i)}
		ts.sendFrom(Ingress{Port: "vm-0b", MAC: hw(macB), IP: netip.IPv4Unspecified()}, decline(t, fake.String(), ip))
		ts.sendFrom(Ingress{Port: "vm-0b", MAC: fake, IP: netip.IPv4Unspecified()}, decline(t, fake.String(), ip))
	}
	if got := len(ts.alloc.declined); got != used {
		t.Errorf("DECLINEs for made-up MACs took %d addresses", got-used)
	}
	counts := ts.IgnoredCounts()
	if counts[Ignored{Type: "DECLINE", Reason: ReasonChaddr}] != uint64(len(pool)) ||
		counts[Ignored{Type: "DECLINE", Reason: ReasonNotHeld}] != declineBurst ||
		counts[Ignored{Type: "DECLINE", Reason: ReasonDeclineRate}] != uint64(2*len(pool)-2*declineBurst) {
		t.Errorf("ignored DECLINEs counted %v", counts)
	}
	if l, ok := ts.store.get(macA); !ok || l.IP.String() != victimIP {
		t.Errorf("the victim lost its lease: %+v", l)
	}
	wantReply(t, ts.send(request(t, macA, dhcpv4.WithClientIP(ip4(victimIP)))), dhcpv4.MessageTypeAck, victimIP, victimIP+":68")
	if ip := ts.lease(macC); ip == victimIP {
		t.Errorf("newcomer got the victim's address")
	}
	// Declines cannot empty the pool even when they are granted: with
	// every other address taken, the declined ones are handed out.
	for i := 0; i < len(pool); i++ {
		mac := net.HardwareAddr{0x52, 0x54, 0, 0, 2, byte(i)}.String()
		if p := ts.send(discover(t, mac)); p == nil {
			t.Fatalf("guest %d of a pool of %d got no offer (used %+v)", i+1, len(pool), ts.Pool())
		}
		if ts.Pool().Free == 0 {
			break
		}
	}
	// The port earns DECLINEs back with time.
	ts.clock = ts.clock.Add(declineEvery)
	rated := ts.IgnoredCounts()[Ignored{Type: "DECLINE", Reason: ReasonDeclineRate}]
	p := ts.send(discover(t, macB))
	if p == nil {
		t.Fatal("attacker got no offer")
	}
	ts.send(decline(t, macB, p.msg.YourIPAddr.String()))
	if got := ts.IgnoredCounts()[Ignored{Type: "DECLINE", Reason: ReasonDeclineRate}]; got != rated {
		t.Errorf("a DECLINE a minute later was refused")
	}
}

// TestServesOnlyItsNetwork: a client message from outside the subnet, or
// addressed to another server, gets nothing.
func TestServesOnlyItsNetwork(t *testing.T) {
	ts := newTestServer(t, newMemStore(), nil)
	d := discover(t, macA)
	if p := ts.sendFrom(Ingress{Port: "vm-0a", MAC: hw(macA), IP: netip.MustParseAddr("192.0.2.7")}, d); p != nil {
		t.Errorf("DISCOVER from outside the subnet answered with %s", p.msg.MessageType())
	}
	if got := ts.IgnoredCounts()[Ignored{Type: "DISCOVER", Reason: ReasonSource}]; got != 1 {
		t.Errorf("ignored DISCOVER counted %d, want 1", got)
	}
	if p := ts.sendFrom(Ingress{Port: "vm-0a", MAC: hw(macA), IP: netip.IPv4Unspecified(), Dst: netip.MustParseAddr("192.0.2.67")}, d); p != nil {
		t.Errorf("DISCOVER to another server answered with %s", p.msg.MessageType())
	}
	for _, dst := range []string{"255.255.255.255", "10.0.0.1", "10.0.0.255"} {
		p := ts.sendFrom(Ingress{Port: "vm-0a", MAC: hw(macA), IP: netip.IPv4Unspecified(), Dst: netip.MustParseAddr(dst)}, d)
		wantReply(t, p, dhcpv4.MessageTypeOffer, "10.0.0.100", "255.255.255.255:68")
	}
}

// TestClientIDMustBeChaddr: an Ethernet client identifier naming another
// MAC is refused; other kinds of identifier are not used as keys.
func TestClientIDMustBeChaddr(t *testing.T) {
	ts := newTestServer(t, newMemStore(), nil)
	other := append([]byte{1}, hw(macB)...)
	if p := ts.send(discover(t, macA, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(other)))); p != nil {
		t.Errorf("DISCOVER with another MAC as client id answered with %s", p.msg.MessageType())
	}
	own := append([]byte{1}, hw(macA)...)
	wantReply(t, ts.send(discover(t, macA, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(own)))), dhcpv4.MessageTypeOffer, "10.0.0.100", "255.255.255.255:68")
	duid := []byte{0xff, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4}
	wantReply(t, ts.send(discover(t, macA, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(duid)))), dhcpv4.MessageTypeOffer, "10.0.0.100", "255.255.255.255:68")
}

// TestGuestWithoutSpoofguard: a guest trusted with other MACs serves
// nested guests' MACs, never one configured on another port, and a
// guest with spoofguard only its own.
func TestGuestWithoutSpoofguard(t *testing.T) {
	ts := newTestServer(t, newMemStore(), func(c *Config) {
		c.Ports = append(c.Ports, Port{Tap: "open-0", MAC: macD})
	})
	nested := hw("02:00:00:00:00:99")
	p := ts.sendFrom(Ingress{Port: "open-0", MAC: nested, IP: netip.IPv4Unspecified()}, discover(t, nested.String()))
	wantReply(t, p, dhcpv4.MessageTypeOffer, "10.0.0.100", "255.255.255.255:68")
	if p := ts.sendFrom(Ingress{Port: "open-0", MAC: hw(macRes), IP: netip.IPv4Unspecified()}, discover(t, macRes)); p != nil {
		t.Errorf("a configured MAC was served on another port: %s", p.msg.MessageType())
	}
	if p := ts.sendFrom(Ingress{Port: "web1-0", MAC: nested, IP: netip.IPv4Unspecified()}, discover(t, nested.String())); p != nil {
		t.Errorf("a guest with spoofguard was served for another MAC: %s", p.msg.MessageType())
	}
	// The nested MAC's offer was given through open-0: nobody else
	// speaks for it while it lasts.
	if p := ts.sendFrom(Ingress{Port: "vm-0b", MAC: nested, IP: netip.IPv4Unspecified()}, discover(t, nested.String())); p != nil {
		t.Errorf("a MAC with an offer through one port was served on another: %s", p.msg.MessageType())
	}
}

// TestOwnerRecordsBounded: a guest cycling through MACs leaves records of
// which port spoke for each only while those MACs hold an offer or lease.
func TestOwnerRecordsBounded(t *testing.T) {
	ts := newTestServer(t, newMemStore(), nil)
	for i := 0; i < 3000; i++ {
		ts.clock = ts.clock.Add(11 * time.Second) // offers lapse after 30s
		mac := net.HardwareAddr{0x02, 0, 0, 0, byte(i >> 8), byte(i)}
		if ts.sendFrom(Ingress{Port: "vm-0b", MAC: mac, IP: netip.IPv4Unspecified()}, discover(t, mac.String())) == nil {
			t.Fatalf("DISCOVER %d not answered", i)
		}
	}
	if n := len(ts.owner); n > ownerSweepMin+3 {
		t.Errorf("%d port records after 3000 MACs, at most 3 of which hold an offer", n)
	}
}
