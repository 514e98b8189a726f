package dhcp

import (
	"net"

	"fmt"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// checkIndex compares the allocator's index with what its maps say, for
// every address of the range.
func checkIndex(t *testing.T, a *allocator, now time.Time, step int) {
	t.Helper()
	a.expire(now)
	offered := map[netip.Addr]bool{}
	for _, o := range a.offers {
		offered[o.ip] = offered[o.ip] || now.Before(o.until)
	}
	for ip := a.cfg.RangeStart; !a.cfg.RangeEnd.Less(ip); ip = ip.Next() {
		_, held := a.holder[ip]
		until, declined := a.declined[ip]
		busy := !a.inPool(ip) || held || declined && now.Before(until) || offered[ip]
		i, _ := a.pool.index(ip)
		if got := a.pool.bits[i/64]&(1<<(i%64)) != 0; got != busy && !(got && declined) {
			t.Fatalf("step %d: index says %s busy=%v, the maps %v (held %v, declined %v)", step, ip, got, busy, held, declined)
		}
	}
}

// TestPoolIndex runs random DISCOVERs, REQUESTs, RELEASEs, DECLINEs and
// failed writes against a small pool, with time passing, and checks after
// each that the index agrees with the maps and that no address is leased
// twice.
func TestPoolIndex(t *testing.T) {
	cfg := testConfig()
	cfg.RangeEnd = netip.MustParseAddr("10.0.0.230") // 131 addresses, three words
	cfg, err := cfg.validate()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := newAllocator(cfg, nil)
	r := rand.New(rand.NewPCG(1, 2))
	now := t0
	for step := range 5000 {
		mac := fmt.Sprintf("52:54:00:00:01:%02x", r.IntN(160))
		switch op := r.IntN(10); {
		case op < 4:
			a.discover(mac, netip.Addr{}, now)
		case op < 8:
			if o, ok := a.offers[mac]; ok && a.canLease(mac, o.ip, now) {
				_, u := a.commit(a.lease(mac, o.ip, "", now))
				if op == 7 {
					a.rollback(u) // the write failed
				}
			}
		case op == 8:
			if l, ok := a.leases[mac]; ok {
				a.release(mac, l.IP, now)
			}
		default:
			if o, ok := a.offers[mac]; ok {
				a.decline(mac, o.ip, now)
			}
		}
		now = now.Add(time.Duration(r.IntN(2000)) * time.Millisecond)
		if r.IntN(500) == 0 {
			now = now.Add(2 * time.Hour) // every lease expires
		}
		checkIndex(t, a, now, step)
		seen := map[netip.Addr]string{}
		for m, l := range a.leases {
			if a.holder[l.IP] != m {
				continue
			}
			if other, ok := seen[l.IP]; ok {
				t.Fatalf("step %d: %s leased to %s and %s", step, l.IP, other, m)
			}
			seen[l.IP] = m
		}
	}
}

// BenchmarkDiscoverNew is a DISCOVER and REQUEST of a new client with
// 20,000 leases held: the cost of a new lease in memory.
func BenchmarkDiscoverNew(b *testing.B) {
	cfg := testConfig()
	cfg.Subnet = netip.MustParsePrefix("10.0.0.0/16")
	cfg.RangeEnd = netip.MustParseAddr("10.0.255.250")
	cfg, err := cfg.validate()
	if err != nil {
		b.Fatal(err)
	}
	a, _ := newAllocator(cfg, nil)
	mac := func(i int) string { return fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff) }
	for i := range 20000 {
		ip, err := a.discover(mac(i), netip.Addr{}, t0)
		if err != nil {
			b.Fatal(err)
		}
		a.commit(a.lease(mac(i), ip, "", t0))
	}
	b.ResetTimer()
	for i := range b.N {
		m := mac(20000 + i%40000)
		ip, err := a.discover(m, netip.Addr{}, t0)
		if err != nil {
			b.Fatal(err)
		}
		a.commit(a.lease(m, ip, "", t0))
		a.release(m, ip, t0)
	}
}

// discardConn drops what the server sends.
type discardConn struct{ net.PacketConn }

func (discardConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }

// BenchmarkExchangeNew is the server's CPU for one four-way exchange of a
// new client (packets decoded and replies encoded, leases written to
// memory), with 20,000 leases held.
func BenchmarkExchangeNew(b *testing.B) {
	cfg := testConfig()
	cfg.Subnet = netip.MustParsePrefix("10.0.0.0/16")
	cfg.RangeEnd = netip.MustParseAddr("10.0.255.250")
	s, err := New(cfg, newMemStore(), nil)
	if err != nil {
		b.Fatal(err)
	}
	hwOf := func(i int) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)} }
	exchange := func(i int) {
		mac := hwOf(i)
		in := Ingress{Port: fmt.Sprintf("vm-%02x", mac[5]), MAC: mac, IP: netip.IPv4Unspecified()}
		d, _ := dhcpv4.NewDiscovery(mac)
		d, _ = dhcpv4.FromBytes(d.ToBytes())
		s.handle(discardConn{}, in, d)
		ip := s.alloc.offers[mac.String()].ip
		r, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip.AsSlice())), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(cfg.ServerIP.AsSlice())))
		r, _ = dhcpv4.FromBytes(r.ToBytes())
		s.handle(discardConn{}, in, r)
	}
	for i := range 20000 {
		exchange(i)
	}
	b.ResetTimer()
	for i := range b.N {
		exchange(20000 + i)
	}
}
