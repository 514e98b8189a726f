package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/model"
)

// The tests below build real labs: they need root, ip and dnsmasq, and skip
// without them. Each lab gets a prefix of its own, so they run in parallel
// and never meet a lab someone else runs on the machine.

func requireLab(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	for _, tool := range append([]string{"ip", "sysctl", "dnsmasq"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s, which is not installed", tool)
		}
	}
}

var prefixSeq atomic.Int64

// testPrefix is a prefix no other test or test run uses: no '-', so no two
// overlap.
func testPrefix() string {
	return fmt.Sprintf("lt%d%s", os.Getpid()%100000, strconv.FormatInt(prefixSeq.Add(1), 36))
}

// testConfig is one NAT network and two VMs; web2's second interface asks
// kvmnet to create its tap, so the lab builds nothing for it.
func testConfig() *model.Config {
	return &model.Config{
		Networks: []model.Network{{
			Name:   "dev",
			Mode:   model.ModeNAT,
			Subnet: netip.MustParsePrefix("192.168.100.0/24"),
		}},
		VMs: []model.VM{
			{Name: "web1", Interfaces: []model.Interface{
				{Network: "dev", MAC: "52:54:00:00:00:10", HWAddr: "52:54:00:00:00:10", Tap: "web1-0"},
			}},
			{Name: "web2", Interfaces: []model.Interface{
				{Network: "dev", MAC: "52:54:00:00:00:11", HWAddr: "52:54:00:00:00:11", Tap: "web2-0"},
				{Network: "dev", MAC: "52:54:00:00:00:12", HWAddr: "52:54:00:00:00:12", Tap: "web2-1", CreateTap: true},
			}},
		},
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// upLab brings a lab up and registers its teardown, which must leave
// nothing behind.
func upLab(t *testing.T, cfg *model.Config) *Lab {
	t.Helper()
	prefix := testPrefix()
	l, err := Up(t.Context(), Options{Prefix: prefix, Config: cfg, Log: testLogger(t)})
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	t.Cleanup(func() {
		if err := Down(prefix); err != nil {
			t.Errorf("Down: %v", err)
		}
		checkGone(t, prefix)
	})
	return l
}

// checkGone fails unless nothing of lab prefix is left: namespaces,
// /etc/netns files, the lab directory, processes.
func checkGone(t *testing.T, prefix string) {
	t.Helper()
	nss, err := namespaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range nss {
		if strings.HasPrefix(ns, prefix+"-") {
			t.Errorf("namespace %q is left after Down", ns)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(etcNetns, prefix+"-*")); len(m) > 0 {
		t.Errorf("%v left after Down", m)
	}
	if _, err := os.Stat(labDir(prefix)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab directory %s left after Down (stat: %v)", labDir(prefix), err)
	}
	if pids := procsWithArg(t, labDir(prefix)); len(pids) > 0 {
		t.Errorf("processes %v of the lab still run after Down", pids)
	}
}

// procsWithArg lists the live (not zombie) processes whose command line
// contains s.
func procsWithArg(t *testing.T, s string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cmdline, []byte(s)) {
			continue
		}
		if alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// "PID (COMM) STATE ...": COMM may hold spaces and parens.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}

// ipLink is what `ip -j -d addr show` says about a link.
type ipLink struct {
	IfName    string   `json:"ifname"`
	Address   string   `json:"address"`
	Flags     []string `json:"flags"`
	OperState string   `json:"operstate"`
	Master    string   `json:"master"`
	LinkInfo  struct {
		InfoKind string `json:"info_kind"`
	} `json:"linkinfo"`
	AddrInfo []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
	} `json:"addr_info"`
}

func (l ipLink) v4() []string {
	var out []string
	for _, a := range l.AddrInfo {
		if a.Family == "inet" {
			out = append(out, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
		}
	}
	return out
}

// links reads namespace ns's links with `ip -j`, an independent view of what
// the lab built.
func links(t *testing.T, ns string) map[string]ipLink {
	t.Helper()
	out, err := run(t.Context(), "ip", "-n", ns, "-j", "-d", "addr", "show")
	if err != nil {
		t.Fatal(err)
	}
	var list []ipLink
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("parsing ip -j output of %s: %v", ns, err)
	}
	m := map[string]ipLink{}
	for _, l := range list {
		m[l.IfName] = l
	}
	return m
}

// defaultVia returns the gateway of namespace ns's default route.
func defaultVia(t *testing.T, ns string) string {
	t.Helper()
	out, err := run(t.Context(), "ip", "-n", ns, "-j", "-4", "route", "show", "default")
	if err != nil {
		t.Fatal(err)
	}
	var routes []struct {
		Gateway string `json:"gateway"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		t.Fatal(err)
	}
	if len(routes) != 1 {
		return fmt.Sprintf("%d default routes", len(routes))
	}
	return routes[0].Gateway
}

// wantLink checks a link exists, is up, and has the given addresses.
func wantLink(t *testing.T, ls map[string]ipLink, ns, name, kind string, addrs ...string) ipLink {
	t.Helper()
	l, ok := ls[name]
	if !ok {
		t.Errorf("%s: no link %q", ns, name)
		return l
	}
	if l.LinkInfo.InfoKind != kind {
		t.Errorf("%s %s: kind %q, want %q", ns, name, l.LinkInfo.InfoKind, kind)
	}
	if !slices.Contains(l.Flags, "UP") {
		t.Errorf("%s %s: not up (flags %v)", ns, name, l.Flags)
	}
	if got := l.v4(); !slices.Equal(got, addrs) {
		t.Errorf("%s %s: addresses %v, want %v", ns, name, got, addrs)
	}
	return l
}

func TestUp(t *testing.T) {
	requireLab(t, "ping")
	t.Parallel()
	l := upLab(t, testConfig())
	p := l.Prefix()

	t.Run("namespaces", func(t *testing.T) {
		want := []string{p + "-lan", p + "-inet", p + "-host", p + "-vm-web1", p + "-vm-web2"}
		if got := l.Namespaces(); !slices.Equal(got, want) {
			t.Errorf("Namespaces() = %v, want %v", got, want)
		}
		nss, _ := namespaces()
		for _, ns := range want {
			if !slices.Contains(nss, ns) {
				t.Errorf("namespace %q missing from %s", ns, netnsDir)
			}
		}
	})

	t.Run("router", func(t *testing.T) {
		ns := l.NS(NodeLAN)
		ls := links(t, ns)
		wantLink(t, ls, ns, "lan0", "bridge", RouterLAN+"/24")
		wantLink(t, ls, ns, "inet0", "veth", RouterInet+"/24")
		if h := wantLink(t, ls, ns, "host0", "veth"); h.Master != "lan0" {
			t.Errorf("%s host0: master %q, want lan0", ns, h.Master)
		}
		out, err := l.Exec(t.Context(), NodeLAN, "sysctl", "-n", "net.ipv4.ip_forward")
		if err != nil || strings.TrimSpace(out) != "1" {
			t.Errorf("%s ip_forward = %q (%v), want 1", ns, out, err)
		}
	})

	t.Run("internet", func(t *testing.T) {
		ns := l.NS(NodeInet)
		wantLink(t, links(t, ns), ns, "eth0", "veth", Internet+"/24")
		if gw := defaultVia(t, ns); gw != RouterInet {
			t.Errorf("%s default via %s, want %s", ns, gw, RouterInet)
		}
	})

	t.Run("host", func(t *testing.T) {
		ns := l.NS(NodeHost)
		ls := links(t, ns)
		wantLink(t, ls, ns, "eth0", "veth", HostLAN+"/24")
		if gw := defaultVia(t, ns); gw != RouterLAN {
			t.Errorf("%s default via %s, want %s", ns, gw, RouterLAN)
		}
		// The host end of each VM interface: named as its tap, up, not
		// enslaved (kvmnet adopts it), no address.
		for _, tap := range []string{"web1-0", "web2-0"} {
			if tl := wantLink(t, ls, ns, tap, "veth"); tl.Master != "" {
				t.Errorf("%s %s: enslaved to %q, want free for kvmnet", ns, tap, tl.Master)
			}
		}
		if _, ok := ls["web2-1"]; ok {
			t.Errorf("%s: web2-1 has createTap, the lab must leave it to kvmnet", ns)
		}
		out, err := l.Exec(t.Context(), NodeHost, "sysctl", "-n", "net.ipv4.ip_forward")
		if err != nil || strings.TrimSpace(out) != "0" {
			t.Errorf("%s ip_forward = %q (%v), want 0: turning it on is kvmnet's job", ns, out, err)
		}
		b, err := os.ReadFile(filepath.Join(etcNetns, ns, "resolv.conf"))
		if err != nil || !strings.Contains(string(b), "nameserver "+RouterLAN+"\n") {
			t.Errorf("%s resolv.conf = %q (%v), want nameserver %s", ns, b, err, RouterLAN)
		}
	})

	t.Run("vms", func(t *testing.T) {
		for _, tc := range []struct{ vm, mac string }{{"web1", "52:54:00:00:00:10"}, {"web2", "52:54:00:00:00:11"}} {
			ns := l.NS(tc.vm)
			ls := links(t, ns)
			if e := wantLink(t, ls, ns, "eth0", "veth"); e.Address != tc.mac {
				t.Errorf("%s eth0: MAC %s, want %s", ns, e.Address, tc.mac)
			}
			if lo := ls["lo"]; !slices.Contains(lo.Flags, "UP") {
				t.Errorf("%s lo: not up (flags %v)", ns, lo.Flags)
			}
			if _, ok := ls["eth1"]; ok {
				t.Errorf("%s: has eth1, but the lab builds nothing for createTap interfaces", ns)
			}
		}
		vms := l.VMs()
		if len(vms) != 2 || len(vms[1].Links) != 1 || !slices.Equal(vms[1].Skipped, []string{"web2-1"}) {
			t.Errorf("VMs() = %+v, want web1 and web2 with web2-1 skipped", vms)
		}
	})

	t.Run("reachability", func(t *testing.T) {
		for _, tc := range []struct{ from, to string }{
			{NodeHost, RouterLAN},
			{NodeHost, Internet},
			// No NAT on the router: the internet host reaches the LAN.
			{NodeInet, HostLAN},
		} {
			if _, err := l.Exec(t.Context(), tc.from, "ping", "-c1", "-W2", tc.to); err != nil {
				t.Errorf("ping from %s to %s: %v", tc.from, tc.to, err)
			}
		}
	})

	t.Run("dns", func(t *testing.T) {
		if _, err := exec.LookPath("dig"); err != nil {
			t.Skip("needs dig")
		}
		// Asked directly, and through the resolv.conf that ip netns exec
		// binds over /etc for the host.
		for _, args := range [][]string{
			{"dig", "+short", "+time=1", "+tries=3", "@" + RouterLAN, InternetName},
			{"dig", "+short", "+time=1", "+tries=3", InternetName},
		} {
			out, err := l.Exec(t.Context(), NodeHost, args...)
			if err != nil || strings.TrimSpace(out) != Internet {
				t.Errorf("%v from the host = %q (%v), want %s", args, out, err, Internet)
			}
		}
	})

	t.Run("open and status", func(t *testing.T) {
		o, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(o.Nodes(), []string{"lan", "inet", "host", "web1", "web2"}) {
			t.Errorf("Open(%q).Nodes() = %v", p, o.Nodes())
		}
		st, err := o.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.DNSMasqPID == 0 || !alive(st.DNSMasqPID) {
			t.Errorf("status: dnsmasq pid %d, want it running", st.DNSMasqPID)
		}
		if len(st.Nodes) != 5 || !st.Nodes[2].Present || !slices.Contains(st.Nodes[2].Addrs, "eth0 "+HostLAN+"/24") {
			t.Errorf("status nodes = %+v", st.Nodes)
		}
		if _, err := o.Exec(t.Context(), "nosuchvm", "true"); err == nil || !strings.Contains(err.Error(), "no node") {
			t.Errorf("Exec on an unknown node: %v, want an error naming the nodes", err)
		}
	})
}

func TestUpRefuses(t *testing.T) {
	requireLab(t)
	t.Parallel()
	l := upLab(t, nil)
	p := l.Prefix()

	_, err := Up(t.Context(), Options{Prefix: p})
	if err == nil || !strings.Contains(err.Error(), "already up") || !strings.Contains(err.Error(), "lab down --prefix "+p) {
		t.Errorf("second Up(%q): %v, want an error saying it is already up and how to take it down", p, err)
	}
	_, err = Up(t.Context(), Options{Prefix: p + "-x"})
	if err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Errorf("Up(%q) next to lab %q: %v, want an overlap error", p+"-x", p, err)
	}
	// The refusals must not have touched the running lab.
	if _, err := l.Exec(t.Context(), NodeHost, "ip", "-4", "addr", "show", "dev", "eth0"); err != nil {
		t.Errorf("lab %q damaged by a refused Up: %v", p, err)
	}
	if _, err := os.Stat(labDir(p + "-x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused Up left %s", labDir(p+"-x"))
	}
}

func TestTwoLabs(t *testing.T) {
	requireLab(t, "ping")
	t.Parallel()
	a := upLab(t, testConfig())
	b := upLab(t, testConfig())
	for _, l := range []*Lab{a, b} {
		if _, err := l.Exec(t.Context(), NodeHost, "ping", "-c1", "-W2", Internet); err != nil {
			t.Errorf("lab %q: %v", l.Prefix(), err)
		}
	}
	if err := a.Down(); err != nil {
		t.Fatal(err)
	}
	checkGone(t, a.Prefix())
	if _, err := b.Exec(t.Context(), NodeHost, "ping", "-c1", "-W2", Internet); err != nil {
		t.Errorf("lab %q after lab %q went down: %v", b.Prefix(), a.Prefix(), err)
	}
}

// startIdle starts a process that waits for its stdin to close, in node's
// namespace, as a stand-in for a daemon someone left running in the lab.
func startIdle(t *testing.T, l *Lab, node string) (*exec.Cmd, <-chan error) {
	t.Helper()
	cmd := l.Command(context.Background(), node, "cat")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { stdin.Close() })
	// Start returns once ip runs; wait until it has entered the namespace
	// and become cat, or Down could look before it is there.
	id, err := netnsID(filepath.Join(netnsDir, l.NS(node)))
	if err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	err = Poll(t.Context(), "cat to run in "+l.NS(node), 10*time.Second, 5*time.Millisecond, func() error {
		got, err := netnsID(fmt.Sprintf("/proc/%d/ns/net", pid))
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || got != id || strings.TrimSpace(string(comm)) != "cat" {
			return ErrNotYet
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return cmd, done
}

// waitExit fails unless the process behind done ends within a deadline.
func waitExit(t *testing.T, what string, done <-chan error) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s still runs after Down", what)
	}
}

func TestDownIdempotent(t *testing.T) {
	requireLab(t)
	t.Parallel()
	prefix := testPrefix()
	l, err := Up(t.Context(), Options{Prefix: prefix, Config: testConfig(), Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := l.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, idle := startIdle(t, l, NodeHost)
	for i := range 2 {
		if err := l.Down(); err != nil {
			t.Fatalf("Down #%d: %v", i+1, err)
		}
		checkGone(t, prefix)
	}
	if alive(st.DNSMasqPID) {
		t.Errorf("dnsmasq (pid %d) still runs after Down", st.DNSMasqPID)
	}
	waitExit(t, "the process left in the host namespace", idle)
	if err := Down(prefix); err != nil {
		t.Errorf("Down of a lab that never was: %v", err)
	}
}

// TestDownAfterCrash loses the *Lab, as a crashed `kvmnet lab up` would,
// and cleans up by prefix alone.
func TestDownAfterCrash(t *testing.T) {
	requireLab(t)
	t.Parallel()
	prefix := testPrefix()
	l, err := Up(t.Context(), Options{Prefix: prefix, Config: testConfig()})
	if err != nil {
		t.Fatal(err)
	}
	_, idle := startIdle(t, l, "web1")
	l = nil // the crash

	if _, err := Open(prefix); err != nil {
		t.Errorf("Open(%q) after the crash: %v", prefix, err)
	}
	if err := Down(prefix); err != nil {
		t.Fatalf("Down(%q): %v", prefix, err)
	}
	checkGone(t, prefix)
	waitExit(t, "the process left in web1's namespace", idle)
	if _, err := Open(prefix); err == nil || !strings.Contains(err.Error(), "not up") {
		t.Errorf("Open(%q) after Down: %v, want a not-up error", prefix, err)
	}
}

// TestUpFailureTearsDown makes Up fail halfway, after the namespaces and
// links of the router exist: a multicast MAC passes the lab's checks but
// the kernel refuses it on the VM's veth.
func TestUpFailureTearsDown(t *testing.T) {
	requireLab(t)
	t.Parallel()
	cfg := testConfig()
	cfg.VMs[1].Interfaces[0].HWAddr = "01:00:5e:00:00:01"
	prefix := testPrefix()
	_, err := Up(t.Context(), Options{Prefix: prefix, Config: cfg, Log: testLogger(t)})
	if err == nil {
		Down(prefix)
		t.Fatal("Up with a multicast MAC succeeded")
	}
	if !strings.Contains(err.Error(), `VM "web2" interface 0`) {
		t.Errorf("Up: %v, want an error naming the VM interface", err)
	}
	checkGone(t, prefix)
}

func TestDHCP(t *testing.T) {
	requireLab(t, "udhcpc", "ping")
	t.Parallel()
	l := upLab(t, testConfig())
	p := l.Prefix()
	machineResolv, resolvErr := os.ReadFile("/etc/resolv.conf")

	// Without kvmnet, plug web1's tap into the LAN, so dnsmasq answers it as
	// it answers a guest of a bridged network.
	lan := l.NS(NodeLAN)
	if _, err := run(t.Context(), "ip", "-n", l.NS(NodeHost), "link", "set", "web1-0", "netns", lan); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t.Context(), "ip", "-n", lan, "link", "set", "web1-0", "master", "lan0", "up"); err != nil {
		t.Fatal(err)
	}

	lease, err := l.DHCP(t.Context(), "web1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	first, last := netip.MustParseAddr(DHCPFirst), netip.MustParseAddr(DHCPLast)
	if lease.IP.Less(first) || last.Less(lease.IP) || lease.Prefix.Bits() != 24 {
		t.Errorf("lease address %s, want one of %s-%s/24", lease.Prefix, first, last)
	}
	router := netip.MustParseAddr(RouterLAN)
	if lease.Router != router || lease.ServerID != router || !slices.Equal(lease.DNS, []netip.Addr{router}) || lease.LeaseTime != time.Hour {
		t.Errorf("lease = %+v, want router, server and DNS %s, 1h", lease, router)
	}

	ns := l.NS("web1")
	if got := links(t, ns)["eth0"].v4(); !slices.Equal(got, []string{lease.Prefix.String()}) {
		t.Errorf("%s eth0 addresses %v, want %s", ns, got, lease.Prefix)
	}
	if gw := defaultVia(t, ns); gw != RouterLAN {
		t.Errorf("%s default via %s, want %s", ns, gw, RouterLAN)
	}
	b, err := os.ReadFile(filepath.Join(etcNetns, ns, "resolv.conf"))
	if err != nil || !strings.Contains(string(b), "nameserver "+RouterLAN+"\n") {
		t.Errorf("%s resolv.conf = %q (%v), want nameserver %s", ns, b, err, RouterLAN)
	}
	if now, err := os.ReadFile("/etc/resolv.conf"); resolvErr == nil && (err != nil || !bytes.Equal(now, machineResolv)) {
		t.Errorf("the machine's /etc/resolv.conf changed: %q, was %q", now, machineResolv)
	}

	if _, err := l.Exec(t.Context(), "web1", "ping", "-c1", "-W2", Internet); err != nil {
		t.Errorf("ping from web1 after DHCP: %v", err)
	}
	if _, err := exec.LookPath("dig"); err == nil {
		out, err := l.Exec(t.Context(), "web1", "dig", "+short", "+time=1", "+tries=3", InternetName)
		if err != nil || strings.TrimSpace(out) != Internet {
			t.Errorf("dig %s in web1 through its resolv.conf = %q (%v), want %s", InternetName, out, err, Internet)
		}
	}

	st, err := l.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(st.LANLeases, func(x LANLease) bool {
		return x.IP == lease.IP.String() && x.MAC == "52:54:00:00:00:10" && x.Hostname == "web1"
	}) {
		t.Errorf("dnsmasq leases %+v lack web1's %s", st.LANLeases, lease.IP)
	}
	if _, err := os.ReadFile(filepath.Join(l.Dir(), "lease-web1-eth0")); err != nil {
		t.Errorf("lease record: %v", err)
	}
	_ = p
}

// TestDHCPNoServer: web2's tap leads nowhere, so udhcpc gives up.
func TestDHCPNoServer(t *testing.T) {
	requireLab(t, "udhcpc")
	t.Parallel()
	l := upLab(t, testConfig())
	start := time.Now()
	_, err := l.DHCP(t.Context(), "web2", "eth0")
	if err == nil || !strings.Contains(err.Error(), "no lease") {
		t.Errorf("DHCP without a server: %v, want a no-lease error", err)
	}
	t.Logf("gave up after %s", time.Since(start).Round(time.Millisecond))
	if _, err := l.DHCP(t.Context(), NodeHost, "eth0"); err == nil {
		t.Errorf("DHCP on the host node succeeded, want an error")
	}
}
