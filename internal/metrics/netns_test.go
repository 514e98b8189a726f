package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// childEnv marks the test binary TestNamespace starts inside its namespace.
const childEnv = "KVMNET_METRICS_TEST_CHILD"

// nsRuleset is the table TestNamespace loads into its namespace: two drop
// rules in output (an anonymous and a named counter), one in prerouting for
// what arrives on v1, and a ct expression, which makes the kernel track
// connections in the namespace at all.
const nsRuleset = `
table inet kvmnet {
	counter named-drops { }
	chain output {
		type filter hook output priority 0; policy accept;
		ct state new counter comment "new-connections"
		udp dport 9 counter drop comment "test-drop"
		udp dport 10 counter name "named-drops" drop comment "named-drop"
	}
	chain prerouting {
		type filter hook prerouting priority 0; policy accept;
		iifname "v1" counter drop comment "v1-drop"
	}
}
`

// Packets TestNamespace sends, and so what the child expects.
const (
	sentTestDrop  = 3 // to 10.9.0.2:9, dropped in output
	sentNamedDrop = 2 // to 10.9.0.2:10, dropped in output
	sentThrough   = 4 // to 10.9.0.2:7: out of v0, into v1, dropped in prerouting
)

// TestNamespace reads a real namespace the way the daemon does: from inside
// it. It builds the namespace, sends known traffic, then runs the test
// binary inside it (`ip netns exec`, as `kvmnet --netns` re-executes
// itself), where TestNamespaceChild compares the metrics with what ip,
// conntrack, sysctl and nft report.
func TestNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	for _, tool := range []string{"ip", "nft", "conntrack", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s is not installed (make deps installs it)", tool)
		}
	}
	ns := nstest.New(t)
	// No IPv6: router solicitations and MLD reports would add packets at
	// times of their own.
	nstest.Run(t, ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	nstest.Run(t, ns, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	nstest.Run(t, ns, "ip", "addr", "add", "10.9.0.1/24", "dev", "v0")
	nstest.Run(t, ns, "ip", "link", "set", "v1", "address", "02:00:00:00:00:02", "up")
	nstest.Run(t, ns, "ip", "link", "set", "v0", "up")
	// A permanent neighbour: no ARP on v0 and v1.
	nstest.Run(t, ns, "ip", "neigh", "add", "10.9.0.2", "lladdr", "02:00:00:00:00:02", "dev", "v0", "nud", "permanent")
	load := nstest.Command(context.Background(), ns, "nft", "-f", "-")
	load.Stdin = strings.NewReader(nsRuleset)
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("loading the test ruleset: %v: %s", err, out)
	}

	nstest.Do(t, ns, func() {
		for _, s := range []struct {
			addr string
			n    int
		}{
			{"10.9.0.2:9", sentTestDrop},
			{"10.9.0.2:10", sentNamedDrop},
			{"10.9.0.2:7", sentThrough},
			{"127.0.0.1:11", 1}, // no listener: an ICMP error comes back on lo
		} {
			conn, err := net.Dial("udp", s.addr)
			if err != nil {
				t.Errorf("dialing %s: %v", s.addr, err)
				return
			}
			for range s.n {
				// Writes that output drops fail with EPERM; the counters
				// still count them.
				conn.Write([]byte("kvmnet"))
			}
			conn.Close()
		}
	})

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := nstest.Command(context.Background(), ns, exe, "-test.run=^TestNamespaceChild$", "-test.v", "-test.count=1")
	child.Env = append(child.Env, childEnv+"=1")
	out, err := child.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestNamespaceChild") {
		t.Fatalf("TestNamespaceChild inside %s: %v\n%s", ns, err, out)
	}
	t.Logf("TestNamespaceChild inside %s:\n%s", ns, out)
}

// TestNamespaceChild is TestNamespace's half inside the namespace.
func TestNamespaceChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("runs inside the namespace of TestNamespace, which starts it")
	}
	m := New(Options{
		Interfaces: func() []Interface {
			return []Interface{{Name: "v0", Network: "dev"}, {Name: "v1", Network: "dev", VM: "web1"}, {Name: "lo"}, {Name: "ghost-0", VM: "ghost"}}
		},
		RuleDrops: func(ctx context.Context) (map[string]uint64, error) {
			out, err := exec.CommandContext(ctx, "nft", "-j", "list", "table", "inet", "kvmnet").Output()
			if err != nil {
				return nil, err
			}
			return ParseDropCounters(out)
		},
	})

	// What the tools see. Nothing sends in the namespace any more, so the
	// metrics gathered after must match exactly.
	links := ipLinkStats(t)
	entries := atoi(t, run(t, "conntrack", "-C"))
	limit := atoi(t, run(t, "sysctl", "-n", "net.netfilter.nf_conntrack_max"))
	ctStats := conntrackS(t)

	if got := links["v0"].TX.Packets; got != sentThrough {
		t.Errorf("ip says v0 sent %d packets, want %d: the test's traffic went astray", got, sentThrough)
	}
	if got := links["v1"].RX.Packets; got != sentThrough {
		t.Errorf("ip says v1 received %d packets, want %d", got, sentThrough)
	}
	if entries < 1 {
		t.Errorf("conntrack -C says %d entries, want at least the UDP flow through v0", entries)
	}

	var want strings.Builder
	for _, st := range []struct {
		metric string
		value  func(linkStats) uint64
	}{
		{"receive_bytes_total", func(l linkStats) uint64 { return l.RX.Bytes }},
		{"receive_packets_total", func(l linkStats) uint64 { return l.RX.Packets }},
		{"receive_drops_total", func(l linkStats) uint64 { return l.RX.Dropped + l.RX.Missed }},
		{"receive_errors_total", func(l linkStats) uint64 { return l.RX.Errors }},
		{"transmit_bytes_total", func(l linkStats) uint64 { return l.TX.Bytes }},
		{"transmit_packets_total", func(l linkStats) uint64 { return l.TX.Packets }},
		{"transmit_drops_total", func(l linkStats) uint64 { return l.TX.Dropped }},
		{"transmit_errors_total", func(l linkStats) uint64 { return l.TX.Errors }},
	} {
		fmt.Fprintf(&want, "# TYPE kvmnet_interface_%s counter\n", st.metric)
		fmt.Fprintf(&want, "kvmnet_interface_%s{interface=%q,network=%q,vm=%q} %d\n", st.metric, "lo", "", "", st.value(links["lo"]))
		fmt.Fprintf(&want, "kvmnet_interface_%s{interface=%q,network=%q,vm=%q} %d\n", st.metric, "v0", "dev", "", st.value(links["v0"]))
		fmt.Fprintf(&want, "kvmnet_interface_%s{interface=%q,network=%q,vm=%q} %d\n", st.metric, "v1", "dev", "web1", st.value(links["v1"]))
	}
	fmt.Fprintf(&want, "# TYPE kvmnet_conntrack_entries gauge\nkvmnet_conntrack_entries %d\n", entries)
	fmt.Fprintf(&want, "# TYPE kvmnet_conntrack_entries_limit gauge\nkvmnet_conntrack_entries_limit %d\n", limit)
	fmt.Fprintf(&want, "# TYPE kvmnet_conntrack_drops_total counter\nkvmnet_conntrack_drops_total %d\n", ctStats["drop"])
	fmt.Fprintf(&want, "# TYPE kvmnet_conntrack_insert_failed_total counter\nkvmnet_conntrack_insert_failed_total %d\n", ctStats["insert_failed"])
	fmt.Fprintf(&want, "# TYPE kvmnet_conntrack_early_drops_total counter\nkvmnet_conntrack_early_drops_total %d\n", ctStats["early_drop"])
	stable := fmt.Sprintf(`# TYPE kvmnet_nft_drop_packets_total counter
kvmnet_nft_drop_packets_total{rule="named-drop"} %d
kvmnet_nft_drop_packets_total{rule="test-drop"} %d
kvmnet_nft_drop_packets_total{rule="v1-drop"} %d
# TYPE kvmnet_scrape_collector_success gauge
kvmnet_scrape_collector_success{collector="conntrack"} 1
kvmnet_scrape_collector_success{collector="interfaces"} 1
kvmnet_scrape_collector_success{collector="nft"} 1
`, sentNamedDrop, sentTestDrop, sentThrough)
	want.WriteString(stable)

	names := []string{"kvmnet_conntrack_entries", "kvmnet_conntrack_entries_limit", "kvmnet_conntrack_drops_total",
		"kvmnet_conntrack_insert_failed_total", "kvmnet_conntrack_early_drops_total",
		"kvmnet_nft_drop_packets_total", "kvmnet_scrape_collector_success"}
	for _, st := range ifaceStats {
		names = append(names, "kvmnet_interface_"+st.name)
	}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(withHelp(t, m, want.String())), names...); err != nil {
		t.Error(err)
	}

	// The same over HTTP on the namespace's loopback. That traffic moves
	// lo's counters and conntrack's, so only what it cannot move is
	// compared.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.ServeListener(ctx, ln) }()
	if err := testutil.ScrapeAndCompare("http://"+ln.Addr().String()+"/metrics", strings.NewReader(withHelp(t, m, stable)),
		"kvmnet_nft_drop_packets_total", "kvmnet_scrape_collector_success"); err != nil {
		t.Error(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}

// withHelp adds the HELP line of every metric in exposition, which
// testutil compares too, from m's own descriptions: what this test checks
// is values and labels, TestGather checks the help texts.
func withHelp(t *testing.T, m *Metrics, exposition string) string {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	help := map[string]string{}
	for _, f := range fams {
		help[f.GetName()] = f.GetHelp()
	}
	var b strings.Builder
	for _, line := range strings.Split(exposition, "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, _, _ = strings.Cut(name, " ")
			fmt.Fprintf(&b, "# HELP %s %s\n", name, help[name])
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

type linkStats struct {
	RX struct {
		Bytes, Packets, Errors, Dropped uint64
		Missed                          uint64 `json:"missed_errors"`
	}
	TX struct {
		Bytes, Packets, Errors, Dropped uint64
	}
}

// ipLinkStats is `ip -j -s -s link show`: the kernel's counters as
// iproute2 reads them over netlink.
func ipLinkStats(t *testing.T) map[string]linkStats {
	t.Helper()
	var links []struct {
		Ifname  string    `json:"ifname"`
		Stats64 linkStats `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(run(t, "ip", "-j", "-s", "-s", "link", "show")), &links); err != nil {
		t.Fatalf("parsing ip -j -s -s link show: %v", err)
	}
	out := map[string]linkStats{}
	for _, l := range links {
		out[l.Ifname] = l.Stats64
	}
	return out
}

// conntrackS sums the per-CPU lines of `conntrack -S` ("cpu=0 found=0
// invalid=0 insert=0 insert_failed=0 drop=0 early_drop=0 ..."), which
// conntrack reads over netlink.
func conntrackS(t *testing.T) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, f := range strings.Fields(run(t, "conntrack", "-S")) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "cpu" {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("conntrack -S: %q: %v", f, err)
		}
		out[k] += n
	}
	return out
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

func atoi(t *testing.T, s string) uint64 {
	t.Helper()
	// conntrack -C prints the count alone on a line.
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		t.Fatalf("parsing %q: %v", s, err)
	}
	return n
}
