package hostdhcp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// The client runs in a child process: the test binary re-executed under
// `ip netns exec B` with these variables set, so that every socket and
// netlink request of Run, on every goroutine, is in namespace B.
const (
	envChild = "KVMNET_HOSTDHCP_CHILD" // the interface to lease for
	envWant  = "KVMNET_HOSTDHCP_WANT"
	envRenew = "KVMNET_HOSTDHCP_RENEW"
)

// Addresses of the test LAN between namespace A (server) and B (client).
const (
	serverAddr = "10.99.0.1/24"
	bridgeMAC  = "02:00:00:99:00:01"
	hostName   = "kvt-host"
)

func TestMain(m *testing.M) {
	if iface := os.Getenv(envChild); iface != "" {
		os.Exit(runChild(iface))
	}
	os.Exit(m.Run())
}

// runChild runs a Client until SIGTERM and logs JSON to stdout, which the
// parent test reads to follow it.
func runChild(iface string) int {
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := Config{Iface: iface, Log: log, Hostname: hostName}
	if w := os.Getenv(envWant); w != "" {
		p, err := netip.ParsePrefix(w)
		if err != nil {
			log.Error("bad "+envWant, "err", err)
			return 2
		}
		cfg.Want = p
	}
	if r := os.Getenv(envRenew); r != "" {
		d, err := time.ParseDuration(r)
		if err != nil {
			log.Error("bad "+envRenew, "err", err)
			return 2
		}
		cfg.renewAfter = func(time.Duration) time.Duration { return d }
	}
	c, err := New(cfg)
	if err != nil {
		log.Error("creating client", "err", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err = c.Run(ctx)
	st, _ := json.Marshal(c.Status())
	log.Info("run returned", "err", err, "status", string(st))
	return 0
}

func requireDNSMasq(t *testing.T) {
	t.Helper()
	nstest.RequireRoot(t)
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skip("skipping: needs dnsmasq (apt-get install dnsmasq-base)")
	}
}

// lan is namespace A (DHCP server on va, 10.99.0.1/24) joined by a veth
// pair to namespace B, where vb is waiting to become a port of bridge br0.
type lan struct {
	a, b string
}

func newLAN(t *testing.T) *lan {
	l := &lan{a: nstest.New(t), b: nstest.New(t)}
	nstest.Run(t, l.a, "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", l.b)
	nstest.Run(t, l.a, "ip", "addr", "add", serverAddr, "dev", "va")
	nstest.Run(t, l.a, "ip", "link", "set", "va", "up")
	return l
}

// makeBridge turns vb into a port of br0, which takes the "uplink's" MAC,
// as kvmnet does with eth0. STP is off, so the port forwards at once.
func (l *lan) makeBridge(t *testing.T) {
	nstest.Run(t, l.b, "ip", "link", "add", "br0", "address", bridgeMAC, "type", "bridge")
	nstest.Run(t, l.b, "ip", "link", "set", "vb", "master", "br0")
	nstest.Run(t, l.b, "ip", "link", "set", "vb", "up")
	nstest.Run(t, l.b, "ip", "link", "set", "br0", "up")
}

// dnsmasq is a DHCP server in namespace A.
type dnsmasq struct {
	leases string
	cmd    *exec.Cmd
	out    *lines
	once   sync.Once
}

// startDNSMasq runs dnsmasq on va handing out first-last with a two-minute
// lease (dnsmasq's shortest), and waits until it has bound its socket.
func startDNSMasq(t *testing.T, ns, first, last string, extra ...string) *dnsmasq {
	t.Helper()
	dir := t.TempDir()
	d := &dnsmasq{leases: filepath.Join(dir, "leases"), out: &lines{}}
	args := append([]string{"dnsmasq",
		"--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface=va", "--bind-interfaces",
		"--dhcp-range=" + first + "," + last + ",255.255.255.0,2m",
		"--dhcp-leasefile=" + d.leases,
		"--pid-file=" + filepath.Join(dir, "pid"),
		"--log-facility=-", "--log-dhcp",
		// No ping before an offer: nothing else takes addresses here,
		// and it delays every first lease by three seconds.
		"--no-ping",
		"--user=root", // the lease file is in a root-only temporary directory
	}, extra...)
	d.cmd = nstest.Command(context.Background(), ns, args...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stdout, d.cmd.Stderr = pw, pw
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting dnsmasq: %v", err)
	}
	pw.Close()
	ready := make(chan struct{})
	go d.out.read(pr, func(s string) bool { return strings.Contains(s, "DHCP, IP range") }, ready)
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("dnsmasq output:\n%s", d.out)
		}
	})
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatalf("dnsmasq did not start within 10s:\n%s", d.out)
	}
	return d
}

// stop kills dnsmasq by its pid (ip execs it, so the pid is dnsmasq's) and
// reaps it.
func (d *dnsmasq) stop() {
	d.once.Do(func() {
		d.cmd.Process.Kill()
		d.cmd.Wait()
	})
}

// fileLease is one line of dnsmasq's lease file.
type fileLease struct {
	expiry   int64
	mac, ip  string
	hostname string
}

func (d *dnsmasq) readLeases(t *testing.T) []fileLease {
	t.Helper()
	b, err := os.ReadFile(d.leases)
	if err != nil {
		t.Fatalf("reading dnsmasq's lease file: %v", err)
	}
	var ls []fileLease
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		exp, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			t.Fatalf("dnsmasq lease line %q: %v", line, err)
		}
		ls = append(ls, fileLease{expiry: exp, mac: f[1], ip: f[2], hostname: f[3]})
	}
	return ls
}

// client is the child process running Run in namespace B.
type client struct {
	cmd  *exec.Cmd
	out  *lines
	recs chan map[string]any
}

func startClient(t *testing.T, ns, iface, want string, renew time.Duration) *client {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &client{out: &lines{}, recs: make(chan map[string]any, 1000)}
	c.cmd = nstest.Command(context.Background(), ns, exe)
	c.cmd.Env = append(c.cmd.Env, envChild+"="+iface, envWant+"="+want, envRenew+"="+renew.String())
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stdout, c.cmd.Stderr = pw, pw
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting the client in namespace %q: %v", ns, err)
	}
	pw.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(c.recs)
		c.out.read(pr, func(s string) bool {
			var rec map[string]any
			if json.Unmarshal([]byte(s), &rec) == nil {
				select {
				case c.recs <- rec:
				default: // nobody reads any more; the output is kept anyway
				}
			}
			return false
		}, nil)
	}()
	t.Cleanup(func() {
		// SIGTERM ends Run; it must return and leave the address.
		c.cmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan error, 1)
		go func() { exited <- c.cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("client exited with %v after SIGTERM", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("client still running 10s after SIGTERM; killing it")
			c.cmd.Process.Kill()
			<-exited
		}
		<-done
		if t.Failed() {
			t.Logf("client output:\n%s", c.out)
		}
	})
	return c
}

// waitLog returns the first log record of the client that match accepts,
// failing the test after timeout.
func (c *client) waitLog(t *testing.T, timeout time.Duration, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case rec, ok := <-c.recs:
			if !ok {
				t.Fatalf("client exited while waiting for %s", what)
			}
			if match(rec) {
				return rec
			}
		case <-deadline:
			t.Fatalf("no %s within %s", what, timeout)
		}
	}
}

func msgIs(msg string) func(map[string]any) bool {
	return func(r map[string]any) bool { return r["msg"] == msg }
}

// waitFor polls cond until it holds, failing the test after timeout with
// cond's last explanation.
func waitFor(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, why)
		}
		<-tick.C
	}
}

// ipAddr is one address of `ip -j addr show`.
type ipAddr struct {
	Family    string `json:"family"`
	Local     string `json:"local"`
	PrefixLen int    `json:"prefixlen"`
	Broadcast string `json:"broadcast"`
	Valid     uint64 `json:"valid_life_time"`
	Preferred uint64 `json:"preferred_life_time"`
}

// addrs lists dev's IPv4 addresses with iproute2, independently of the
// netlink code under test.
func addrs(t *testing.T, ns, dev string) []ipAddr {
	t.Helper()
	out := nstest.Run(t, ns, "ip", "-j", "-4", "addr", "show", "dev", dev)
	var links []struct {
		AddrInfo []ipAddr `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatalf("parsing `ip -j addr show dev %s`: %v\n%s", dev, err, out)
	}
	if len(links) != 1 {
		t.Fatalf("`ip -j addr show dev %s` listed %d links:\n%s", dev, len(links), out)
	}
	return links[0].AddrInfo
}

func findAddr(as []ipAddr, local string) (ipAddr, bool) {
	for _, a := range as {
		if a.Local == local {
			return a, true
		}
	}
	return ipAddr{}, false
}

// TestLeaseAndRenew starts the client before its bridge exists, with a
// wanted address inside the server's range that is on the bridge with a
// short lifetime (as kvmnet leaves it after moving it from eth0). The
// client must wait for the bridge, lease exactly that address under the
// bridge's MAC, give it the lease's lifetime, and renew it.
func TestLeaseAndRenew(t *testing.T) {
	requireDNSMasq(t)
	l := newLAN(t)
	srv := startDNSMasq(t, l.a, "10.99.0.100", "10.99.0.150")
	c := startClient(t, l.b, "br0", "10.99.0.120/24", time.Second)

	c.waitLog(t, 10*time.Second, "a log that br0 is missing", func(r map[string]any) bool {
		return r["waiting"] == true && strings.Contains(fmt.Sprint(r["err"]), `"br0" does not exist`)
	})
	l.makeBridge(t)
	nstest.Run(t, l.b, "ip", "addr", "add", "10.99.0.120/24", "brd", "+", "dev", "br0", "valid_lft", "30", "preferred_lft", "30")

	rec := c.waitLog(t, 30*time.Second, "bound lease", msgIs("dhcp lease bound"))
	if rec["address"] != "10.99.0.120/24" || rec["server"] != "10.99.0.1" {
		t.Fatalf("bound %v from %v, want 10.99.0.120/24 from 10.99.0.1", rec["address"], rec["server"])
	}
	as := addrs(t, l.b, "br0")
	a, ok := findAddr(as, "10.99.0.120")
	if !ok || len(as) != 1 {
		t.Fatalf("br0 has %+v, want 10.99.0.120 alone", as)
	}
	if a.PrefixLen != 24 || a.Broadcast != "10.99.0.255" {
		t.Errorf("br0 has 10.99.0.120/%d brd %s, want /24 brd 10.99.0.255", a.PrefixLen, a.Broadcast)
	}
	// The lease is 120 s; a few have passed at most.
	if a.Valid < 100 || a.Valid > 120 || a.Preferred < 100 || a.Preferred > 120 {
		t.Errorf("br0's 10.99.0.120 has valid_lft %d preferred_lft %d, want both in [100, 120] (the 2-minute lease)", a.Valid, a.Preferred)
	}
	ls := srv.readLeases(t)
	if len(ls) != 1 || ls[0].ip != "10.99.0.120" || ls[0].mac != bridgeMAC || ls[0].hostname != hostName {
		t.Fatalf("dnsmasq leases %+v, want one for 10.99.0.120 to %s named %s", ls, bridgeMAC, hostName)
	}

	// Renewals every second move the server's expiry on; once it has
	// moved by 5 s, the kernel's lifetime must have been refreshed too: a
	// lifetime left alone since the first ACK would be 115 s or less.
	first := ls[0].expiry
	waitFor(t, 20*time.Second, func() (bool, string) {
		ls := srv.readLeases(t)
		if len(ls) == 1 && ls[0].expiry >= first+5 {
			return true, ""
		}
		return false, fmt.Sprintf("dnsmasq's lease did not move 5 s past %d: %+v", first, ls)
	})
	a, ok = findAddr(addrs(t, l.b, "br0"), "10.99.0.120")
	if !ok || a.Valid < 117 {
		t.Errorf("after renewals br0's 10.99.0.120 is %+v, want valid_lft >= 117", a)
	}
	c.waitLog(t, 5*time.Second, "renewal log", msgIs("dhcp lease extended"))
}

// TestServerChange replaces the server with one that hands out another
// range and refuses what it does not know (--dhcp-authoritative). The next
// RENEW gets a NAK; the client must lease an address of the new range, put
// it on the bridge and remove the old one.
func TestServerChange(t *testing.T) {
	requireDNSMasq(t)
	l := newLAN(t)
	l.makeBridge(t)
	srv := startDNSMasq(t, l.a, "10.99.0.100", "10.99.0.150")
	c := startClient(t, l.b, "br0", "", time.Second)
	rec := c.waitLog(t, 30*time.Second, "bound lease", msgIs("dhcp lease bound"))
	old, err := netip.ParsePrefix(fmt.Sprint(rec["address"]))
	if err != nil || old.Addr().As4()[3] < 100 || old.Addr().As4()[3] > 150 {
		t.Fatalf("first lease %v, want an address in 10.99.0.100-150", rec["address"])
	}

	srv.stop()
	startDNSMasq(t, l.a, "10.99.0.200", "10.99.0.210", "--dhcp-authoritative")
	c.waitLog(t, 30*time.Second, "NAK", func(r map[string]any) bool {
		return strings.Contains(fmt.Sprint(r["err"]), "DHCPNAK")
	})
	rec = c.waitLog(t, 30*time.Second, "new lease", msgIs("dhcp lease bound"))
	p, err := netip.ParsePrefix(fmt.Sprint(rec["address"]))
	if err != nil || p.Addr().As4()[3] < 200 || p.Addr().As4()[3] > 210 || p.Bits() != 24 {
		t.Fatalf("second lease %v, want an address in 10.99.0.200-210/24", rec["address"])
	}
	as := addrs(t, l.b, "br0")
	if _, ok := findAddr(as, p.Addr().String()); !ok || len(as) != 1 {
		t.Fatalf("br0 has %+v, want %s alone (the old %s removed)", as, p, old)
	}
}

// lines collects a child's output for the failure report.
type lines struct {
	mu sync.Mutex
	b  strings.Builder
}

// read copies r line by line until EOF, calling each on every line; when
// each returns true the first time, ready (if any) is closed.
func (l *lines) read(r *os.File, each func(string) bool, ready chan struct{}) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		s := sc.Text()
		l.mu.Lock()
		l.b.WriteString(s + "\n")
		l.mu.Unlock()
		if each(s) && ready != nil {
			close(ready)
			ready = nil
		}
	}
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
