package dhcp

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kvmnet/kvmnet/internal/store"
)

// memStore is an in-memory LeaseStore.
type memStore struct {
	mu     sync.Mutex
	leases map[string]store.Lease // network/mac
	fail   error
}

func newMemStore() *memStore { return &memStore{leases: map[string]store.Lease{}} }

func (m *memStore) PutLease(l store.Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.leases[l.Network+"/"+l.MAC] = l
	return nil
}

func (m *memStore) DeleteLease(network, mac string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.leases, network+"/"+mac)
	return nil
}

// QueueLeases writes ops at once, all or nothing.
func (m *memStore) QueueLeases(ops ...store.LeaseOp) *store.LeaseCommit {
	m.mu.Lock()
	fail := m.fail
	m.mu.Unlock()
	if fail != nil {
		for _, op := range ops {
			if !op.Delete {
				return store.DoneCommit(fail)
			}
		}
	}
	for _, op := range ops {
		if op.Delete {
			m.DeleteLease(op.Lease.Network, op.Lease.MAC)
		} else {
			m.PutLease(op.Lease)
		}
	}
	return store.DoneCommit(nil)
}

func (m *memStore) Leases(network string) ([]store.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.Lease
	for _, l := range m.leases {
		if network == "" || l.Network == network {
			out = append(out, l)
		}
	}
	return out, nil
}

func (m *memStore) get(mac string) (store.Lease, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.leases["dev/"+mac]
	return l, ok
}

// sentPacket is one reply the server wrote.
type sentPacket struct {
	to  string
	msg *dhcpv4.DHCPv4
}

// fakeConn records what the server sends; handle only ever writes.
type fakeConn struct {
	net.PacketConn
	sent []sentPacket
}

func (c *fakeConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	m, err := dhcpv4.FromBytes(b)
	if err != nil {
		return 0, err
	}
	c.sent = append(c.sent, sentPacket{to: addr.String(), msg: m})
	return len(b), nil
}

// testServer is a Server driven by hand: packets go straight to its handler.
type testServer struct {
	*Server
	t     *testing.T
	conn  *fakeConn
	store *memStore
	logs  *bytes.Buffer
	clock time.Time
}

func newTestServer(t *testing.T, st *memStore, mod func(*Config)) *testServer {
	t.Helper()
	cfg := testConfig()
	cfg.DNS = []netip.Addr{netip.MustParseAddr("10.0.0.1")}
	cfg.Domain = "dev.kvm"
	cfg.MTU = 1400
	if mod != nil {
		mod(&cfg)
	}
	logs := &bytes.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg, st, log)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, t: t, conn: &fakeConn{}, store: st, logs: logs, clock: t0}
	s.now = func() time.Time { return ts.clock }
	return ts
}

// portOf is the port a test client sits behind: its configured tap, or
// "vm-" and the MAC's last byte for a guest kvmnet does not know.
func portOf(mac net.HardwareAddr) string {
	for _, p := range testConfig().Ports {
		if p.MAC == mac.String() {
			return p.Tap
		}
	}
	return fmt.Sprintf("vm-%02x", mac[len(mac)-1])
}

// send hands m to the server as its client sends it, from its own port
// and MAC, and returns the reply, or nil.
func (ts *testServer) send(m *dhcpv4.DHCPv4) *sentPacket {
	ts.t.Helper()
	in := Ingress{Port: portOf(m.ClientHWAddr), MAC: m.ClientHWAddr, IP: netip.IPv4Unspecified()}
	if ci := addr4(m.ClientIPAddr); ci.IsValid() {
		in.IP = ci
	}
	return ts.sendFrom(in, m)
}

// sendFrom hands m to the server as if it came in through in.
func (ts *testServer) sendFrom(in Ingress, m *dhcpv4.DHCPv4) *sentPacket {
	ts.t.Helper()
	n := len(ts.conn.sent)
	ts.handle(ts.conn, in, m)
	switch len(ts.conn.sent) - n {
	case 0:
		return nil
	case 1:
		return &ts.conn.sent[n]
	default:
		ts.t.Fatalf("server sent %d replies to one request", len(ts.conn.sent)-n)
		return nil
	}
}

func hw(mac string) net.HardwareAddr {
	h, err := net.ParseMAC(mac)
	if err != nil {
		panic(err)
	}
	return h
}

func discover(t *testing.T, mac string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.NewDiscovery(hw(mac), mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func request(t *testing.T, mac string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(hw(mac)),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func ip4(s string) net.IP { return net.ParseIP(s).To4() }

func wantReply(t *testing.T, p *sentPacket, typ dhcpv4.MessageType, yiaddr, to string) {
	t.Helper()
	if p == nil {
		t.Fatalf("no reply, want %s", typ)
	}
	if got := p.msg.MessageType(); got != typ {
		t.Fatalf("reply is %s, want %s", got, typ)
	}
	if got := p.msg.YourIPAddr.String(); yiaddr != "" && got != yiaddr {
		t.Errorf("%s yiaddr = %s, want %s", typ, got, yiaddr)
	}
	if p.to != to {
		t.Errorf("%s sent to %s, want %s", typ, p.to, to)
	}
}

func TestServerOfferAckOptions(t *testing.T) {
	ts := newTestServer(t, newMemStore(), nil)
	d := discover(t, macRes)
	p := ts.send(d)
	wantReply(t, p, dhcpv4.MessageTypeOffer, "10.0.0.10", "255.255.255.255:68")
	m := p.msg
	checks := []struct{ name, got, want string }{
		{"server id", m.ServerIdentifier().String(), "10.0.0.1"},
		{"mask", net.IP(m.SubnetMask()).String(), "255.255.255.0"},
		{"router", ipsString(m.Router()), "10.0.0.1"},
		{"dns", ipsString(m.DNS()), "10.0.0.1"},
		{"domain", m.DomainName(), "dev.kvm"},
		{"hostname", m.HostName(), "web1"},
		{"lease", m.IPAddressLeaseTime(0).String(), "1h0m0s"},
		{"renewal", m.IPAddressRenewalTime(0).String(), "30m0s"},
		{"rebinding", m.IPAddressRebindingTime(0).String(), "52m30s"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("OFFER %s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if got := m.Options.Get(dhcpv4.OptionInterfaceMTU); !bytes.Equal(got, []byte{0x05, 0x78}) {
		t.Errorf("OFFER MTU option = %x, want 0578 (1400)", got)
	}
	if m.TransactionID != d.TransactionID {
		t.Error("transaction ID not copied")
	}

	p = ts.send(request(t, macRes,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4("10.0.0.10"))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip4("10.0.0.1")))))
	wantReply(t, p, dhcpv4.MessageTypeAck, "10.0.0.10", "255.255.255.255:68")
	l, ok := ts.store.get(macRes)
	if !ok || l.IP != netip.MustParseAddr("10.0.0.10") || !l.Expiry.Equal(t0.Add(time.Hour)) || l.Hostname != "web1" {
		t.Errorf("stored lease = %+v, %v", l, ok)
	}
	if !strings.Contains(ts.logs.String(), `msg="dhcp lease"`) {
		t.Errorf("new lease not logged:\n%s", ts.logs)
	}

	// Renewal: unicast from the bound client, answered to its address.
	ts.clock = t0.Add(30 * time.Minute)
	p = ts.send(request(t, macRes, dhcpv4.WithClientIP(ip4("10.0.0.10"))))
	wantReply(t, p, dhcpv4.MessageTypeAck, "10.0.0.10", "10.0.0.10:68")
	if got := p.msg.ClientIPAddr.String(); got != "10.0.0.10" {
		t.Errorf("renewal ACK ciaddr = %s", got)
	}
	if l, _ := ts.store.get(macRes); !l.Expiry.Equal(ts.clock.Add(time.Hour)) {
		t.Errorf("renewal did not extend the stored lease: %+v", l)
	}
}

func ipsString(ips []net.IP) string {
	var s []string
	for _, ip := range ips {
		s = append(s, ip.String())
	}
	return strings.Join(s, ",")
}

func TestServerNak(t *testing.T) {
	ts := newTestServer(t, newMemStore(), nil)
	// Someone else's reserved address.
	p := ts.send(request(t, macA, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4("10.0.0.10")))))
	wantReply(t, p, dhcpv4.MessageTypeNak, "0.0.0.0", "255.255.255.255:68")
	if got := p.msg.ServerIdentifier().String(); got != "10.0.0.1" {
		t.Errorf("NAK server id = %s", got)
	}
	if p.msg.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Error("NAK carries a lease time")
	}
	// A renewing client whose address is not its own is NAKed by
	// broadcast: it cannot receive at an address it may not use.
	p = ts.send(request(t, macA, dhcpv4.WithClientIP(ip4("10.0.0.150"))))
	wantReply(t, p, dhcpv4.MessageTypeNak, "", "255.255.255.255:68")
	if _, ok := ts.store.get(macA); ok {
		t.Error("lease stored after NAK")
	}
}

func TestServerOtherServerChosen(t *testing.T) {
	ts := newTestServer(t, newMemStore(), nil)
	wantReply(t, ts.send(discover(t, macA)), dhcpv4.MessageTypeOffer, "10.0.0.100", "255.255.255.255:68")
	p := ts.send(request(t, macA,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4("10.0.0.100"))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip4("10.0.0.254")))))
	if p != nil {
		t.Fatalf("answered a REQUEST for another server with %s", p.msg.MessageType())
	}
	// The offer was withdrawn, so the next client may have the address.
	wantReply(t, ts.send(discover(t, macB)), dhcpv4.MessageTypeOffer, "10.0.0.100", "255.255.255.255:68")
}

func TestServerRelayReply(t *testing.T) {
	relay := hw("52:54:00:00:00:50")
	ts := newTestServer(t, newMemStore(), func(c *Config) {
		c.Ports = append(c.Ports, Port{Tap: "relay-0", MAC: relay.String()})
	})
	// A relay without spoofguard, sending from giaddr: answered there.
	from := Ingress{Port: "relay-0", MAC: relay, IP: netip.MustParseAddr("10.0.0.50")}
	p := ts.sendFrom(from, discover(t, macA, dhcpv4.WithGatewayIP(ip4("10.0.0.50"))))
	wantReply(t, p, dhcpv4.MessageTypeOffer, "10.0.0.100", "10.0.0.50:67")
	// Anyone else naming a relay would have replies sent where it likes.
	for _, c := range []struct {
		name string
		in   Ingress
	}{
		{"guest with spoofguard", Ingress{Port: "web1-0", MAC: hw(macRes), IP: netip.MustParseAddr("10.0.0.50")}},
		{"unknown guest", Ingress{Port: "vm-0b", MAC: hw(macB), IP: netip.MustParseAddr("10.0.0.50")}},
		{"giaddr not the sender", Ingress{Port: "relay-0", MAC: relay, IP: netip.MustParseAddr("10.0.0.51")}},
	} {
		if p := ts.sendFrom(c.in, discover(t, macB, dhcpv4.WithGatewayIP(ip4("10.0.0.50")))); p != nil {
			t.Errorf("%s: relayed DISCOVER answered with %s to %s", c.name, p.msg.MessageType(), p.to)
		}
	}
	if got := ts.IgnoredCounts()[Ignored{Type: "DISCOVER", Reason: ReasonRelay}]; got != 3 {
		t.Errorf("ignored relayed DISCOVERs counted %d, want 3", got)
	}
}

func TestServerReleaseDeclineInform(t *testing.T) {
	ts := newTestServer(t, newMemStore(), nil)
	ts.send(discover(t, macA))
	wantReply(t, ts.send(request(t, macA, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4("10.0.0.100"))))),
		dhcpv4.MessageTypeAck, "10.0.0.100", "255.255.255.255:68")

	ts.clock = t0.Add(time.Minute)
	// A RELEASE meant for another server is ignored.
	ts.send(request(t, macA, dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(ip4("10.0.0.100")),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip4("10.0.0.254")))))
	if l, _ := ts.store.get(macA); !l.Expiry.Equal(t0.Add(time.Hour)) {
		t.Errorf("RELEASE for another server changed the lease: %+v", l)
	}
	rel := request(t, macA, dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(ip4("10.0.0.100")))
	if p := ts.send(rel); p != nil {
		t.Errorf("RELEASE answered with %s", p.msg.MessageType())
	}
	if l, _ := ts.store.get(macA); !l.Expiry.Equal(ts.clock) {
		t.Errorf("released lease expires %v, want %v", l.Expiry, ts.clock)
	}

	dec := request(t, macA, dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4("10.0.0.100"))))
	if p := ts.send(dec); p != nil {
		t.Errorf("DECLINE answered with %s", p.msg.MessageType())
	}
	if _, ok := ts.store.get(macA); ok {
		t.Error("declined lease still stored")
	}
	if !strings.Contains(ts.logs.String(), "already in use") {
		t.Errorf("decline not logged:\n%s", ts.logs)
	}
	wantReply(t, ts.send(discover(t, macA)), dhcpv4.MessageTypeOffer, "10.0.0.101", "255.255.255.255:68")

	inf := request(t, macB, dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(ip4("10.0.0.7")))
	p := ts.send(inf)
	wantReply(t, p, dhcpv4.MessageTypeAck, "0.0.0.0", "10.0.0.7:68")
	if p.msg.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Error("ACK to INFORM carries a lease time")
	}
	if p.msg.DomainName() != "dev.kvm" || ipsString(p.msg.DNS()) != "10.0.0.1" {
		t.Errorf("ACK to INFORM lacks options: %s", p.msg.Summary())
	}
}

func TestServerStoreFailureNoAck(t *testing.T) {
	st := newMemStore()
	ts := newTestServer(t, st, nil)
	ts.send(discover(t, macA))
	st.fail = errors.New("disk full")
	if p := ts.send(request(t, macA, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4("10.0.0.100"))))); p != nil {
		t.Errorf("answered %s although the lease was not stored", p.msg.MessageType())
	}
	if len(ts.Leases()) != 0 {
		t.Errorf("unstored lease kept in memory: %+v", ts.Leases())
	}
	st.fail = nil
	wantReply(t, ts.send(request(t, macA, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4("10.0.0.100"))))),
		dhcpv4.MessageTypeAck, "10.0.0.100", "255.255.255.255:68")
}

func TestServerExhausted(t *testing.T) {
	ts := newTestServer(t, newMemStore(), nil)
	for _, mac := range []string{macA, macB, macC} {
		if ts.send(discover(t, mac)) == nil {
			t.Fatalf("no offer for %s", mac)
		}
	}
	for i := 0; i < 5; i++ {
		ts.clock = t0.Add(time.Duration(i) * time.Second)
		if p := ts.send(discover(t, macD)); p != nil {
			t.Fatalf("exhausted pool answered %s", p.msg.MessageType())
		}
	}
	if n := strings.Count(ts.logs.String(), "pool exhausted"); n != 1 {
		t.Errorf("exhaustion logged %d times in 5 seconds, want once:\n%s", n, ts.logs)
	}
	if !strings.Contains(ts.logs.String(), "pool_size=3") {
		t.Errorf("exhaustion log lacks the pool size:\n%s", ts.logs)
	}
	if st := ts.Pool(); st.Free != 0 || st.Used != 3 {
		t.Errorf("Pool() = %+v", st)
	}
	ts.clock = t0.Add(exhaustedLogEvery + 5*time.Second)
	ts.send(discover(t, macD)) // the offers have expired: D gets one
	ts.clock = t0.Add(exhaustedLogEvery + 6*time.Second)
	ts.send(discover(t, macA))
	ts.send(discover(t, macB))
	ts.send(discover(t, "52:54:00:00:00:0e"))
	if n := strings.Count(ts.logs.String(), "pool exhausted"); n != 2 {
		t.Errorf("exhaustion logged %d times after a minute, want twice", n)
	}
}

func TestServerRestartKeepsLeases(t *testing.T) {
	st := newMemStore()
	ts := newTestServer(t, st, nil)
	for _, c := range []struct{ mac, ip string }{{macRes, "10.0.0.10"}, {macA, "10.0.0.100"}} {
		wantReply(t, ts.send(discover(t, c.mac)), dhcpv4.MessageTypeOffer, c.ip, "255.255.255.255:68")
		wantReply(t, ts.send(request(t, c.mac, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(c.ip))))),
			dhcpv4.MessageTypeAck, c.ip, "255.255.255.255:68")
	}

	ts = newTestServer(t, st, nil)
	ts.clock = t0.Add(2 * time.Hour) // long after the leases expired
	wantReply(t, ts.send(discover(t, macB)), dhcpv4.MessageTypeOffer, "10.0.0.101", "255.255.255.255:68")
	wantReply(t, ts.send(discover(t, macA)), dhcpv4.MessageTypeOffer, "10.0.0.100", "255.255.255.255:68")
	wantReply(t, ts.send(discover(t, macRes)), dhcpv4.MessageTypeOffer, "10.0.0.10", "255.255.255.255:68")
	if got := len(ts.Leases()); got != 2 {
		t.Errorf("Leases() has %d entries after restart, want 2", got)
	}
}

func TestServerUpdate(t *testing.T) {
	ts := newTestServer(t, newMemStore(), nil)
	cfg := testConfig()
	cfg.Reservations = append(cfg.Reservations, Reservation{MAC: macA, IP: netip.MustParseAddr("10.0.0.20"), Hostname: "web2"})
	cfg.Domain = "new.kvm"
	if err := ts.Update(cfg); err != nil {
		t.Fatal(err)
	}
	p := ts.send(discover(t, macA))
	wantReply(t, p, dhcpv4.MessageTypeOffer, "10.0.0.20", "255.255.255.255:68")
	if p.msg.DomainName() != "new.kvm" || p.msg.HostName() != "web2" {
		t.Errorf("updated options not sent: %s", p.msg.Summary())
	}
	cfg.Interface = "kv-other"
	if err := ts.Update(cfg); err == nil {
		t.Error("Update accepted an interface change")
	}
	cfg = testConfig()
	cfg.RangeStart = netip.MustParseAddr("10.0.0.250")
	if err := ts.Update(cfg); err == nil {
		t.Error("Update accepted an invalid config")
	}
}

func TestServerIgnoresNonEthernet(t *testing.T) {
	ts := newTestServer(t, newMemStore(), nil)
	m := discover(t, macA)
	m.ClientHWAddr = net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8}
	if p := ts.send(m); p != nil {
		t.Errorf("answered a non-Ethernet client with %s", p.msg.MessageType())
	}
	m = discover(t, macA)
	m.OpCode = dhcpv4.OpcodeBootReply
	if p := ts.send(m); p != nil {
		t.Errorf("answered a BOOTREPLY with %s", p.msg.MessageType())
	}
}

func TestHostnameSanitised(t *testing.T) {
	m := discover(t, macA, dhcpv4.WithOption(dhcpv4.OptHostName("My_Host.example.com")))
	if got := hostname(m); got != "myhost" {
		t.Errorf("hostname = %q, want myhost", got)
	}
}
