package dns

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	mdns "github.com/miekg/dns"
)

// Every socket in these tests is on loopback: the server on 127.0.0.2, fake
// upstreams on 127.0.0.1.
var listenAddr = netip.MustParseAddr("127.0.0.2")

// fakeUpstream is a miekg server on 127.0.0.1 (UDP and TCP on one port) that
// answers every A query with 192.0.2.1 and returns NXDOMAIN for anything
// else, or REFUSES everything when built with refuse. It records the names it
// was asked.
type fakeUpstream struct {
	addr string
	mu   sync.Mutex
	seen []string
}

func newFakeUpstream(t *testing.T, refuse bool) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		q := r.Question[0]
		f.mu.Lock()
		f.seen = append(f.seen, q.Name)
		f.mu.Unlock()
		m := new(mdns.Msg)
		m.SetReply(r)
		switch {
		case refuse:
			m.Rcode = mdns.RcodeRefused
		case q.Qtype == mdns.TypeA:
			m.Answer = append(m.Answer, &mdns.A{
				Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 300},
				A:   net.IPv4(192, 0, 2, 1),
			})
		default:
			m.Rcode = mdns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			if try < 10 {
				continue
			}
			t.Fatal(err)
		}
		f.addr = pc.LocalAddr().String()
		for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
			started := make(chan struct{})
			srv.NotifyStartedFunc = func() { close(started) }
			go srv.ActivateAndServe()
			<-started
			t.Cleanup(func() { srv.Shutdown() })
		}
		return f
	}
}

func (f *fakeUpstream) asked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// silentUpstream is a UDP socket that reads queries and never answers.
func silentUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func testRecords() []Record {
	return []Record{
		{Name: "web1", IP: netip.MustParseAddr("10.0.0.10")},
		{Name: "DB1.dev.kvm.", IP: netip.MustParseAddr("10.0.0.11")},
		{Name: "db1", IP: netip.MustParseAddr("fd00::11")},
		{Name: "alias", IP: netip.MustParseAddr("10.0.0.10")},
	}
}

// startServer starts a server for domain dev.kvm on 127.0.0.2 on a free
// port. Port 0 would mean 53, which tests cannot count on.
func startServer(t *testing.T, mod func(*Config)) *Server {
	t.Helper()
	for try := 0; try < 10; try++ {
		cfg := Config{
			Network: "dev",
			Listen:  listenAddr,
			Domain:  "dev.kvm",
			Subnet:  netip.MustParsePrefix("10.0.0.0/24"),
			Records: testRecords,
			Timeout: 500 * time.Millisecond,
			Port:    freePort(t),
			// The test's clients are on loopback.
			Clients: netip.MustParsePrefix("127.0.0.0/8"),
		}
		if mod != nil {
			mod(&cfg)
		}
		log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
		s, err := newServer(cfg, log, filepath.Join(t.TempDir(), "resolv.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			// Someone took the port between freePort and Start.
			t.Logf("retrying: %v", err)
			continue
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
		return s
	}
	t.Fatal("no free port on 127.0.0.2")
	return nil
}

func freePort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", netip.AddrPortFrom(listenAddr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func query(t *testing.T, s *Server, proto, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	c := &mdns.Client{Net: proto, Timeout: 5 * time.Second}
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := c.Exchange(m, s.Addr().String())
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, mdns.TypeToString[qtype], proto, err)
	}
	return r
}

// answers renders the answer section as "NAME TTL TYPE DATA" lines.
func answers(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		f := strings.Fields(rr.String())
		out = append(out, strings.Join(append(f[:2:2], f[3:]...), " "))
	}
	return out
}

func TestOwnNames(t *testing.T) {
	s := startServer(t, nil)
	tests := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"web1.dev.kvm.", mdns.TypeA, mdns.RcodeSuccess, []string{"web1.dev.kvm. 30 A 10.0.0.10"}},
		{"WEB1.Dev.KVM.", mdns.TypeA, mdns.RcodeSuccess, []string{"WEB1.Dev.KVM. 30 A 10.0.0.10"}},
		{"db1.dev.kvm.", mdns.TypeA, mdns.RcodeSuccess, []string{"db1.dev.kvm. 30 A 10.0.0.11"}},
		{"db1.dev.kvm.", mdns.TypeAAAA, mdns.RcodeSuccess, []string{"db1.dev.kvm. 30 AAAA fd00::11"}},
		// The name exists but has no record of that type: NODATA.
		{"web1.dev.kvm.", mdns.TypeAAAA, mdns.RcodeSuccess, nil},
		{"web1.dev.kvm.", mdns.TypeMX, mdns.RcodeSuccess, nil},
		{"dev.kvm.", mdns.TypeSOA, mdns.RcodeSuccess, []string{"dev.kvm. 30 SOA ns.dev.kvm. hostmaster.dev.kvm. 1 3600 600 86400 30"}},
		{"nope.dev.kvm.", mdns.TypeA, mdns.RcodeNameError, nil},
		{"a.web1.dev.kvm.", mdns.TypeA, mdns.RcodeNameError, nil},
	}
	for _, proto := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			r := query(t, s, proto, tc.name, tc.qtype)
			what := proto + " " + tc.name + " " + mdns.TypeToString[tc.qtype]
			if r.Rcode != tc.rcode {
				t.Errorf("%s: rcode %s, want %s", what, mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tc.rcode])
			}
			if !r.Authoritative {
				t.Errorf("%s: answer not authoritative", what)
			}
			if diff := cmp.Diff(tc.want, answers(r)); diff != "" {
				t.Errorf("%s: answers (-want +got):\n%s", what, diff)
			}
			if len(r.Answer) == 0 {
				if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != mdns.TypeSOA {
					t.Errorf("%s: negative answer without SOA: %v", what, r.Ns)
				}
			}
		}
	}
}

func TestPTR(t *testing.T) {
	up := newFakeUpstream(t, false)
	s := startServer(t, func(c *Config) { c.Upstreams = []string{up.addr} })
	tests := []struct {
		name  string
		rcode int
		want  []string
		auth  bool
	}{
		{"10.0.0.10.in-addr.arpa.", mdns.RcodeSuccess, []string{
			"10.0.0.10.in-addr.arpa. 30 PTR web1.dev.kvm.",
			"10.0.0.10.in-addr.arpa. 30 PTR alias.dev.kvm.",
		}, true},
		{"1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", mdns.RcodeSuccess, []string{
			"1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 30 PTR db1.dev.kvm.",
		}, true},
		// Inside the subnet but nobody's: answered here, not leaked.
		{"99.0.0.10.in-addr.arpa.", mdns.RcodeNameError, nil, true},
		// Outside: the upstream's business.
		{"1.2.0.192.in-addr.arpa.", mdns.RcodeNameError, nil, false},
	}
	for _, tc := range tests {
		r := query(t, s, "udp", tc.name, mdns.TypePTR)
		if r.Rcode != tc.rcode || r.Authoritative != tc.auth {
			t.Errorf("%s: rcode %s authoritative %v, want %s %v", tc.name, mdns.RcodeToString[r.Rcode], r.Authoritative, mdns.RcodeToString[tc.rcode], tc.auth)
		}
		if diff := cmp.Diff(tc.want, answers(r)); diff != "" {
			t.Errorf("%s: answers (-want +got):\n%s", tc.name, diff)
		}
	}
	if diff := cmp.Diff([]string{"1.2.0.192.in-addr.arpa."}, up.asked()); diff != "" {
		t.Errorf("names forwarded (-want +got):\n%s", diff)
	}
}

func TestForward(t *testing.T) {
	up := newFakeUpstream(t, false)
	silent := silentUpstream(t)
	refusing := newFakeUpstream(t, true)
	s := startServer(t, func(c *Config) {
		// Tried in order: one that never answers, then one that
		// refuses, then the good one.
		c.Upstreams = []string{silent, refusing.addr, up.addr}
		c.Timeout = 200 * time.Millisecond
	})
	for _, proto := range []string{"udp", "tcp"} {
		for _, name := range []string{"example.com.", "web1.", "web1.dev.kvm.example.com."} {
			r := query(t, s, proto, name, mdns.TypeA)
			want := []string{name + " 300 A 192.0.2.1"}
			if diff := cmp.Diff(want, answers(r)); diff != "" || r.Rcode != mdns.RcodeSuccess {
				t.Errorf("%s %s: rcode %s, answers (-want +got):\n%s", proto, name, mdns.RcodeToString[r.Rcode], diff)
			}
			if r.Authoritative {
				t.Errorf("%s %s: forwarded answer marked authoritative", proto, name)
			}
		}
	}
	// The refusing upstream was asked before the good one.
	if got := refusing.asked(); len(got) != 6 {
		t.Errorf("refusing upstream asked %v, want every query", got)
	}
	// Nothing inside the domain was forwarded.
	for _, n := range up.asked() {
		if mdns.IsSubDomain("dev.kvm.", n) {
			t.Errorf("forwarded own name %s", n)
		}
	}
}

func TestUpstreamTimeoutServfail(t *testing.T) {
	refusing := newFakeUpstream(t, true)
	s := startServer(t, func(c *Config) {
		c.Upstreams = []string{silentUpstream(t), refusing.addr, silentUpstream(t)}
		c.Timeout = 200 * time.Millisecond
	})
	start := time.Now()
	r := query(t, s, "udp", "example.com.", mdns.TypeA)
	if r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", mdns.RcodeToString[r.Rcode])
	}
	// Two tries of 200ms each, well inside a stub resolver's 5s timeout.
	// A REFUSED is no answer either: the guest gets SERVFAIL.
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("SERVFAIL took %v", d)
	}
	// Own names still resolve while the upstreams are down.
	if r := query(t, s, "udp", "web1.dev.kvm.", mdns.TypeA); len(r.Answer) != 1 {
		t.Errorf("own name not answered while upstreams are down: %v", r)
	}
}

func TestNoUpstreams(t *testing.T) {
	s := startServer(t, nil) // the test resolv.conf does not exist
	if got := s.Config().Upstreams; len(got) != 0 {
		t.Fatalf("upstreams %v", got)
	}
	if r := query(t, s, "udp", "example.com.", mdns.TypeA); r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", mdns.RcodeToString[r.Rcode])
	}
}

func TestUpstreamsFromResolvConf(t *testing.T) {
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	content := "search example.org\nnameserver 10.0.0.1\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver fd00::53\n"
	if err := os.WriteFile(rc, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := newServer(Config{Network: "dev", Listen: netip.MustParseAddr("10.0.0.1")}, nil, rc)
	if err != nil {
		t.Fatal(err)
	}
	// Our own address is skipped (it would loop); a stub on loopback that
	// is not us is kept.
	want := []string{"127.0.0.53:53", "192.0.2.53:53", "[fd00::53]:53"}
	if diff := cmp.Diff(want, s.Config().Upstreams); diff != "" {
		t.Errorf("upstreams (-want +got):\n%s", diff)
	}

	// A stub on loopback that is us is skipped too.
	s, err = newServer(Config{Network: "dev", Listen: netip.MustParseAddr("127.0.0.53")}, nil, rc)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"10.0.0.1:53", "192.0.2.53:53", "[fd00::53]:53"}
	if diff := cmp.Diff(want, s.Config().Upstreams); diff != "" {
		t.Errorf("upstreams (-want +got):\n%s", diff)
	}

	// Update re-reads the file.
	if err := os.WriteFile(rc, []byte("nameserver 192.0.2.99\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(Config{Network: "dev", Listen: netip.MustParseAddr("127.0.0.53")}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"192.0.2.99:53"}, s.Config().Upstreams); diff != "" {
		t.Errorf("upstreams after Update (-want +got):\n%s", diff)
	}
}

func TestNewRejects(t *testing.T) {
	// Each config must be refused for its own fault, with the message
	// that says what is allowed.
	const prefix = `dns config of network "dev": `
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no listen", Config{Network: "dev"}, `listen address "invalid IP" must be the network's gateway address, not empty or a wildcard (that would make an open resolver)`},
		{"wildcard listen", Config{Network: "dev", Listen: netip.MustParseAddr("0.0.0.0")}, `listen address "0.0.0.0" must be the network's gateway address, not empty or a wildcard (that would make an open resolver)`},
		{"bad domain", Config{Network: "dev", Listen: listenAddr, Domain: "a..b"}, `domain "a..b" is not a valid domain name`},
		{"bad upstream", Config{Network: "dev", Listen: listenAddr, Upstreams: []string{"dns.google"}}, `upstream "dns.google" must be an IP address with an optional port, like 192.0.2.53 or [2001:db8::53]:53`},
		{"bad port", Config{Network: "dev", Listen: listenAddr, Port: 70000}, "port 70000 must be between 1 and 65535"},
		{"bad timeout", Config{Network: "dev", Listen: listenAddr, Timeout: -time.Second}, "timeout -1s must be positive"},
	} {
		_, err := New(tc.cfg, nil)
		if err == nil || err.Error() != prefix+tc.want {
			t.Errorf("%s: New() error = %v, want %s%s", tc.name, err, prefix, tc.want)
		}
	}
}

// TestOnlyClients: a query from outside the network's clients gets no
// answer over UDP (its source may be forged) and REFUSED over TCP, before
// anything is looked up or forwarded.
func TestOnlyClients(t *testing.T) {
	up := newFakeUpstream(t, false)
	s := startServer(t, func(c *Config) {
		c.Upstreams = []string{up.addr}
		c.Clients = netip.Prefix{} // Subnet, 10.0.0.0/24: not loopback
	})
	for _, name := range []string{"web1.dev.kvm.", "example.com."} {
		m := new(mdns.Msg)
		m.SetQuestion(name, mdns.TypeA)
		c := &mdns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
		if r, _, err := c.Exchange(m, s.Addr().String()); err == nil {
			t.Errorf("udp %s from outside the subnet answered: %v", name, r)
		}
		c = &mdns.Client{Net: "tcp", Timeout: 2 * time.Second}
		r, _, err := c.Exchange(m, s.Addr().String())
		if err != nil {
			t.Fatalf("tcp %s: %v", name, err)
		}
		if r.Rcode != mdns.RcodeRefused || len(r.Answer) != 0 {
			t.Errorf("tcp %s from outside the subnet: rcode %s, %d answers; want REFUSED and none", name, mdns.RcodeToString[r.Rcode], len(r.Answer))
		}
	}
	if got := up.asked(); len(got) != 0 {
		t.Errorf("queries from outside were forwarded: %v", got)
	}
	if got := s.Refused(); got != 4 {
		t.Errorf("Refused() = %d, want 4", got)
	}
}

func TestUpdate(t *testing.T) {
	up := newFakeUpstream(t, false)
	var mu sync.Mutex
	recs := []Record{{Name: "web1", IP: netip.MustParseAddr("10.0.0.10")}}
	records := func() []Record {
		mu.Lock()
		defer mu.Unlock()
		return recs
	}
	s := startServer(t, func(c *Config) { c.Records = records; c.Upstreams = []string{up.addr} })

	// Records are read per query: a new guest resolves at once.
	mu.Lock()
	recs = append(recs, Record{Name: "web2", IP: netip.MustParseAddr("10.0.0.12")})
	mu.Unlock()
	if r := query(t, s, "udp", "web2.dev.kvm.", mdns.TypeA); len(r.Answer) != 1 {
		t.Errorf("new record not served: %v", r)
	}

	cfg := s.Config()
	cfg.Domain = "lab.kvm"
	cfg.Records = records
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if r := query(t, s, "udp", "web1.lab.kvm.", mdns.TypeA); len(r.Answer) != 1 || !r.Authoritative {
		t.Errorf("web1.lab.kvm after Update: %v", r)
	}
	// The old domain is no longer ours: forwarded.
	if r := query(t, s, "udp", "web1.dev.kvm.", mdns.TypeA); r.Authoritative {
		t.Errorf("old domain still answered locally: %v", r)
	}

	cfg.Listen = netip.MustParseAddr("127.0.0.3")
	if err := s.Update(cfg); err == nil {
		t.Error("Update accepted a new listen address")
	}
}

// TestOnlyOnListenAddress checks the server is bound to its address alone:
// the same port on another local address has nobody behind it.
func TestOnlyOnListenAddress(t *testing.T) {
	s := startServer(t, nil)
	if got := s.Addr().Addr(); got != listenAddr {
		t.Fatalf("listening on %s, want %s", got, listenAddr)
	}
	other := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), s.Addr().Port()).String()
	c := &mdns.Client{Net: "tcp", Timeout: 2 * time.Second}
	m := new(mdns.Msg)
	m.SetQuestion("web1.dev.kvm.", mdns.TypeA)
	if _, _, err := c.Exchange(m, other); err == nil {
		t.Errorf("a server answered on %s", other)
	}
}

// TestDig asks with dig, an independent client with its own EDNS options.
func TestDig(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("skipping: dig not found in PATH (Debian package bind9-dnsutils)")
	}
	s := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct{ args, want string }{
		{"web1.dev.kvm A", "10.0.0.10"},
		{"-x 10.0.0.11", "db1.dev.kvm."},
		{"+tcp web1.dev.kvm A", "10.0.0.10"},
	} {
		args := append([]string{"@" + listenAddr.String(), "-p", strconv.Itoa(int(s.Addr().Port())), "+short", "+time=2", "+tries=1"}, strings.Fields(tc.args)...)
		out, err := exec.CommandContext(ctx, "dig", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %s: %v: %s", tc.args, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != tc.want {
			t.Errorf("dig %s = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestParseReverse(t *testing.T) {
	for name, want := range map[string]string{
		"4.3.2.1.in-addr.arpa.": "1.2.3.4",
		"b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa.": "4321:0:1:2:3:4:567:89ab",
		"3.2.1.in-addr.arpa.":     "",
		"256.3.2.1.in-addr.arpa.": "",
		"04.3.2.1.in-addr.arpa.":  "",
		"example.com.":            "",
	} {
		ip, ok := parseReverse(name)
		got := ""
		if ok {
			got = ip.String()
		}
		if got != want {
			t.Errorf("parseReverse(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestBurstWithStrangers: 10,000 guest queries from 50 clients at once,
// while a stranger floods the server with as many: every guest query is
// answered, no stranger's, and the server serves on.
func TestBurstWithStrangers(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Clients = netip.MustParsePrefix("127.0.0.1/32") })
	const total, workers = 10000, 50
	flood := make(chan struct{})
	go func() {
		defer close(flood)
		// The stranger's source: another loopback address.
		conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3)}, net.UDPAddrFromAddrPort(s.Addr()))
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		m := new(mdns.Msg)
		m.SetQuestion("web1.dev.kvm.", mdns.TypeA)
		b, _ := m.Pack()
		for i := 0; i < total; i++ {
			conn.Write(b)
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
			for i := 0; i < total/workers; i++ {
				m := new(mdns.Msg)
				m.SetQuestion("web1.dev.kvm.", mdns.TypeA)
				var r *mdns.Msg
				var err error
				// UDP: a query the kernel drops on a full buffer is
				// asked again, as stub resolvers do.
				for try := 0; try < 3; try++ {
					if r, _, err = c.Exchange(m, s.Addr().String()); err == nil {
						break
					}
				}
				if err != nil || len(r.Answer) != 1 {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	<-flood
	t.Logf("%d guest queries in %v, %d strangers' queries refused", total, time.Since(start), s.Refused())
	if failed != 0 {
		t.Errorf("%d of %d guest queries unanswered", failed, total)
	}
	if s.Refused() == 0 {
		t.Error("no stranger's query reached the server")
	}
	if r := query(t, s, "udp", "web1.dev.kvm.", mdns.TypeA); len(r.Answer) != 1 {
		t.Errorf("after the burst: %v", r)
	}
}
