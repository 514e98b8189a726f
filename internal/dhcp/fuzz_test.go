package dhcp

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kvmnet/kvmnet/internal/store"
)

// fuzzPorts are where a fuzzed message may come in: a configured guest
// with spoofguard (web1-0, macRes), one without (open-0, macD), and a
// guest kvmnet does not know (vm-0a, macA).
var fuzzPorts = []string{"web1-0", "open-0", "vm-0a", "vm-0b"}

// FuzzHandle feeds one client message, as the listener would after
// parsing a frame, to a server holding leases of two guests and an offer
// to a third, through the real handler. Whatever comes in: no panic, at
// most one reply, and a reply is a well-formed answer to the asker; the
// leases of guests other than the frame's sender never change, no lease
// goes to a MAC other than the sender's (but through a trusted relay),
// and no address is leased twice.
func FuzzHandle(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed.msg, seed.port, seed.srcIsChaddr, seed.src)
	}
	f.Fuzz(func(t *testing.T, payload []byte, port uint8, srcIsChaddr bool, src []byte) {
		m, err := dhcpv4.FromBytes(payload)
		if err != nil {
			return // the listener drops what does not parse
		}
		ts := fuzzServer(t)
		in := Ingress{Port: fuzzPorts[int(port)%len(fuzzPorts)], MAC: hw(macB), IP: netip.IPv4Unspecified()}
		if srcIsChaddr {
			in.MAC = append(net.HardwareAddr(nil), m.ClientHWAddr...)
		}
		if a, ok := netip.AddrFromSlice(src); ok && a.Is4() {
			in.IP = a
		}
		before := leasesByMAC(ts.store)
		p := ts.sendFrom(in, m)

		after := leasesByMAC(ts.store)
		relayed := addr4(m.GatewayIPAddr).IsValid() && in.Port == "open-0"
		// mine reports whether the message may touch mac's lease: only
		// its own client's, sent from the MAC's port.
		mine := func(mac string) bool {
			if mac != m.ClientHWAddr.String() || (!relayed && mac != in.MAC.String()) {
				return false
			}
			owner, ok := fuzzOwners[mac]
			return !ok || owner == in.Port
		}
		byIP := map[netip.Addr]string{}
		for mac, l := range after {
			if other, ok := byIP[l.IP]; ok {
				t.Fatalf("%s leased to both %s and %s", l.IP, other, mac)
			}
			byIP[l.IP] = mac
			if l.IP == ts.cfg.ServerIP || !ts.cfg.Subnet.Contains(l.IP) {
				t.Fatalf("lease of %s on %s, the server's or outside the subnet", mac, l.IP)
			}
			if old, had := before[mac]; (!had || old != l) && !mine(mac) {
				t.Fatalf("lease of %s changed by a message with chaddr %s from %s on %s: %+v -> %+v", mac, m.ClientHWAddr, in.MAC, in.Port, old, l)
			}
		}
		for mac, l := range before {
			if _, ok := after[mac]; !ok && !mine(mac) {
				t.Fatalf("lease of %s (%s) removed by a message with chaddr %s from %s on %s", mac, l.IP, m.ClientHWAddr, in.MAC, in.Port)
			}
		}
		if p == nil {
			return
		}
		r := p.msg
		if _, err := dhcpv4.FromBytes(r.ToBytes()); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if r.OpCode != dhcpv4.OpcodeBootReply || r.TransactionID != m.TransactionID || !bytes.Equal(r.ClientHWAddr, m.ClientHWAddr) {
			t.Fatalf("reply is not an answer to the request: %s", r.Summary())
		}
		switch r.MessageType() {
		case dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck:
			yi := addr4(r.YourIPAddr)
			if r.MessageType() == dhcpv4.MessageTypeAck && m.MessageType() == dhcpv4.MessageTypeInform {
				if yi.IsValid() {
					t.Fatalf("ACK to INFORM gives %s", yi)
				}
				break
			}
			if !yi.IsValid() || !ts.cfg.Subnet.Contains(yi) || yi == ts.cfg.ServerIP {
				t.Fatalf("%s of %s", r.MessageType(), r.YourIPAddr)
			}
			if res, ok := ts.alloc.reserved[m.ClientHWAddr.String()]; ok && yi != res.IP {
				t.Fatalf("%s of %s to %s, reserved %s", r.MessageType(), yi, m.ClientHWAddr, res.IP)
			}
			if r.ServerIdentifier().String() != ts.cfg.ServerIP.String() {
				t.Fatalf("%s with server id %s", r.MessageType(), r.ServerIdentifier())
			}
		case dhcpv4.MessageTypeNak:
		default:
			t.Fatalf("reply of type %s", r.MessageType())
		}
		// Replies go to the client, or to a relay that is its sender.
		if gi := addr4(m.GatewayIPAddr); gi.IsValid() && p.to != (&net.UDPAddr{IP: gi.AsSlice(), Port: 67}).String() {
			t.Fatalf("relayed reply sent to %s", p.to)
		} else if !gi.IsValid() && p.to != "255.255.255.255:68" && p.to != (&net.UDPAddr{IP: m.ClientIPAddr.To4(), Port: 68}).String() {
			t.Fatalf("reply sent to %s", p.to)
		}
	})
}

// fuzzOwners are the ports the MACs of fuzzServer belong to, by
// configuration or by their lease or offer.
var fuzzOwners = map[string]string{macRes: "web1-0", macRes2: "db1-0", macD: "open-0", macA: "vm-0a", macC: "vm-0b"}

// fuzzServer is a test server with macRes and macA leased (macA through
// vm-0a) and an offer made to macC through vm-0b.
func fuzzServer(t *testing.T) *testServer {
	st := newMemStore()
	ts := newTestServer(t, st, func(c *Config) {
		c.Ports = append(c.Ports, Port{Tap: "open-0", MAC: macD})
	})
	ts.lease(macRes)
	ts.lease(macA)
	ts.sendFrom(Ingress{Port: "vm-0b", MAC: hw(macC), IP: netip.IPv4Unspecified()}, discover(t, macC))
	ts.clock = ts.clock.Add(time.Second)
	return ts
}

func leasesByMAC(st *memStore) map[string]store.Lease {
	ls, _ := st.Leases("dev")
	out := map[string]store.Lease{}
	for _, l := range ls {
		out[l.MAC] = l
	}
	return out
}

type fuzzSeed struct {
	msg         []byte
	port        uint8
	srcIsChaddr bool
	src         []byte
}

// fuzzSeeds are the messages of a normal exchange and of the attacks.
func fuzzSeeds(f *testing.F) []fuzzSeed {
	mk := func(mods ...dhcpv4.Modifier) []byte {
		m, err := dhcpv4.New(mods...)
		if err != nil {
			f.Fatal(err)
		}
		return m.ToBytes()
	}
	typ := func(mt dhcpv4.MessageType) dhcpv4.Modifier { return dhcpv4.WithMessageType(mt) }
	opt := dhcpv4.WithOption
	zero := []byte{0, 0, 0, 0}
	return []fuzzSeed{
		{mk(dhcpv4.WithHwAddr(hw(macB)), typ(dhcpv4.MessageTypeDiscover)), 3, true, zero},
		{mk(dhcpv4.WithHwAddr(hw(macRes)), typ(dhcpv4.MessageTypeRequest), opt(dhcpv4.OptRequestedIPAddress(ip4("10.0.0.10")))), 0, true, zero},
		{mk(dhcpv4.WithHwAddr(hw(macA)), typ(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(ip4("10.0.0.100"))), 3, true, zero},
		{mk(dhcpv4.WithHwAddr(hw(macA)), typ(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(ip4("10.0.0.100"))), 2, true, []byte{10, 0, 0, 100}},
		{mk(dhcpv4.WithHwAddr(hw("02:00:00:00:01:01")), typ(dhcpv4.MessageTypeDecline), opt(dhcpv4.OptRequestedIPAddress(ip4("10.0.0.101")))), 1, true, zero},
		{mk(dhcpv4.WithHwAddr(hw(macB)), typ(dhcpv4.MessageTypeDiscover), dhcpv4.WithGatewayIP(ip4("10.0.0.50"))), 1, false, []byte{10, 0, 0, 50}},
		{mk(dhcpv4.WithHwAddr(hw(macB)), typ(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(ip4("10.0.0.7"))), 3, true, []byte{10, 0, 0, 7}},
	}
}
