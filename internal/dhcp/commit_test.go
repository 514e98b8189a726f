package dhcp

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kvmnet/kvmnet/internal/store"
)

// ackConn collects the ACKs a server sends, from any goroutine.
type ackConn struct {
	net.PacketConn
	mu   sync.Mutex
	acks map[string]netip.Addr // by MAC
}

func (c *ackConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	m, err := dhcpv4.FromBytes(b)
	if err != nil {
		return 0, err
	}
	if m.MessageType() == dhcpv4.MessageTypeAck {
		ip, _ := netip.AddrFromSlice(m.YourIPAddr.To4())
		c.mu.Lock()
		c.acks[m.ClientHWAddr.String()] = ip
		c.mu.Unlock()
	}
	return len(b), nil
}

// TestServerGroupCommit runs new clients at once against a server on a
// real store: every ACK sent is a lease on disk once the server closes
// (the store is reopened from its file), and no address is given twice.
func TestServerGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), store.File)
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Subnet = netip.MustParsePrefix("10.0.0.0/16")
	cfg.RangeEnd = netip.MustParseAddr("10.0.255.250")
	s, err := New(cfg, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := &ackConn{acks: map[string]netip.Addr{}}
	const workers, each = 32, 40
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				mac := net.HardwareAddr{2, 0, 0, 0, byte(w), byte(i)}
				in := Ingress{Port: fmt.Sprintf("vm-%02x", w), MAC: mac, IP: netip.IPv4Unspecified()}
				d, _ := dhcpv4.NewDiscovery(mac)
				s.handle(conn, in, d)
				s.mu.Lock()
				o := s.alloc.offers[mac.String()]
				s.mu.Unlock()
				r, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
					dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(o.ip.AsSlice())))
				s.handle(conn, in, r)
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if len(conn.acks) != workers*each {
		t.Fatalf("%d ACKs, want %d", len(conn.acks), workers*each)
	}
	st, err = store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	leases, err := st.Leases(cfg.Network)
	if err != nil {
		t.Fatal(err)
	}
	byIP := map[netip.Addr]string{}
	byMAC := map[string]netip.Addr{}
	for _, l := range leases {
		if other, ok := byIP[l.IP]; ok {
			t.Errorf("%s stored for %s and %s", l.IP, other, l.MAC)
		}
		byIP[l.IP], byMAC[l.MAC] = l.MAC, l.IP
	}
	for mac, ip := range conn.acks {
		if byMAC[mac] != ip {
			t.Errorf("ACK of %s to %s, stored %v", ip, mac, byMAC[mac])
		}
	}
}
