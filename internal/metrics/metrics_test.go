package metrics

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

func TestReadNetDev(t *testing.T) {
	got, err := readNetDev("testdata/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]netDevStats{
		"lo":     {RxBytes: 1200, RxPackets: 12, TxBytes: 1200, TxPackets: 12},
		"eth0":   {RxBytes: 987654321, RxPackets: 654321, RxErrors: 1, RxDrops: 2, TxBytes: 123456789, TxPackets: 98765, TxErrors: 3, TxDrops: 4},
		"kv-dev": {RxBytes: 5000, RxPackets: 50, TxBytes: 7000, TxPackets: 70, TxDrops: 5},
		// More than 32 bits, and wider than its column.
		"web1-0": {RxBytes: 12345678901234, RxPackets: 40, RxDrops: 6, TxBytes: 3000, TxPackets: 30},
		// A name wider than its column.
		"verylongtap-0": {RxBytes: 100, RxPackets: 1, TxBytes: 200, TxPackets: 2},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestReadNetDevErrors(t *testing.T) {
	const hdr = "Inter-|   Receive                                                |  Transmit\n" +
		" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
	for name, tc := range map[string]struct{ data, want string }{
		"missing":       {"", "no such file"},
		"one line":      {"Inter-|\n", "unexpected header"},
		"short row":     {hdr + "  eth0: 1 2 3\n", `interface "eth0" has 3 columns, header has 16`},
		"not a number":  {hdr + "  eth0: x 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n", `rx_bytes of "eth0"`},
		"renamed field": {strings.Replace(hdr, "errs", "errors", 1), `no column "rx_errs"`},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "dev")
			if name != "missing" {
				if err := os.WriteFile(path, []byte(tc.data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := readNetDev(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestParseDropCounters reads a real `nft -j list table inet kvmnet`
// (nft 1.0.6) captured by testdata/capture-nft.sh after applying
// examples/lab.yaml and sending 3 datagrams from a guest to its gateway and
// 2 from the LAN into the NAT network.
func TestParseDropCounters(t *testing.T) {
	got, err := ParseDropCounters([]byte(mustRead(t, "testdata/lab-table.json")))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{
		"guest-to-host-drop":    3,
		"into-nat-drop":         2,
		"between-networks-drop": 0,
		"nat-elsewhere-drop":    0,
		"forward-from-drop":     0,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestParseDropCountersCases(t *testing.T) {
	const named = `{"nftables": [
		{"table": {"family": "inet", "name": "kvmnet", "handle": 1}},
		{"rule": {"family": "inet", "table": "kvmnet", "chain": "output", "handle": 4, "comment": "named-drop",
			"expr": [{"counter": "named-drops"}, {"drop": null}]}},
		{"counter": {"family": "inet", "name": "named-drops", "table": "kvmnet", "handle": 2, "packets": 7, "bytes": 0}},
		{"rule": {"family": "inet", "table": "kvmnet", "chain": "output", "handle": 5, "comment": "counted-accept",
			"expr": [{"counter": {"packets": 9, "bytes": 0}}, {"accept": null}]}},
		{"rule": {"family": "inet", "table": "kvmnet", "chain": "output", "handle": 6, "comment": "uncounted-drop",
			"expr": [{"drop": null}]}},
		{"rule": {"family": "inet", "table": "kvmnet", "chain": "output", "handle": 7,
			"expr": [{"counter": {"packets": 4, "bytes": 0}}, {"drop": null}]}},
		{"rule": {"family": "inet", "table": "kvmnet", "chain": "forward", "handle": 8, "comment": "twice",
			"expr": [{"counter": {"packets": 1, "bytes": 0}}, {"drop": null}]}},
		{"rule": {"family": "inet", "table": "kvmnet", "chain": "forward", "handle": 9, "comment": "twice",
			"expr": [{"counter": {"packets": 2, "bytes": 0}}, {"drop": null}]}},
		{"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 3, "comment": "docker",
			"expr": [{"counter": {"packets": 100, "bytes": 0}}, {"drop": null}]}}
	]}`
	for name, tc := range map[string]struct {
		data    string
		want    map[string]uint64
		wantErr string
	}{
		// Named counters, accepts and uncounted drops left out, rules
		// without comments and other tables ignored, same comments summed.
		"cases":         {data: named, want: map[string]uint64{"named-drop": 7, "twice": 3}},
		"empty table":   {data: `{"nftables": [{"metainfo": {"version": "1.0.6"}}]}`, want: map[string]uint64{}},
		"garbage":       {data: "not json", wantErr: "parsing nft JSON"},
		"no nftables":   {data: `{"other": []}`, wantErr: `no "nftables" array`},
		"unknown named": {data: strings.Replace(named, `"name": "named-drops"`, `"name": "other"`, 1), wantErr: `counter "named-drops" is not defined`},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseDropCounters([]byte(tc.data))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// fixtureOptions are Options over the fixtures in testdata/proc and fixed
// callbacks.
func fixtureOptions() Options {
	return Options{
		Interfaces: func() []Interface {
			return []Interface{
				{Name: "kv-dev", Network: "dev"},
				{Name: "web1-0", Network: "dev", VM: "web1"},
				{Name: "eth0"},
				{Name: "db1-0", Network: "dev", VM: "db1"}, // not created yet
				{Name: "eth0"}, // listed twice
			}
		},
		RuleDrops: func(context.Context) (map[string]uint64, error) {
			return ParseDropCounters([]byte(mustReadFile("testdata/lab-table.json")))
		},
		PortSecurityDrops: func(context.Context) (map[string]map[string]uint64, error) {
			return map[string]map[string]uint64{
				"web1-0": {"ip": 5, "mac": 0},
				"db1-0":  {"arp": 1},
			}, nil
		},
		Pools: func() []Pool {
			return []Pool{{Network: "dev", Used: 2, Free: 98}, {Network: "test", Used: 1, Free: 126}}
		},
		Forwards: func() map[string]int { return map[string]int{"dev": 2, "test": 0} },
		ProcRoot: "testdata/proc",
	}
}

// kvmnetMetrics is every metric name kvmnet defines, for comparisons that
// leave out the go_ and process_ metrics.
var kvmnetMetrics = []string{
	"kvmnet_interface_receive_bytes_total", "kvmnet_interface_receive_packets_total",
	"kvmnet_interface_receive_drops_total", "kvmnet_interface_receive_errors_total",
	"kvmnet_interface_transmit_bytes_total", "kvmnet_interface_transmit_packets_total",
	"kvmnet_interface_transmit_drops_total", "kvmnet_interface_transmit_errors_total",
	"kvmnet_conntrack_entries", "kvmnet_conntrack_entries_limit",
	"kvmnet_conntrack_drops_total", "kvmnet_conntrack_insert_failed_total", "kvmnet_conntrack_early_drops_total",
	"kvmnet_nft_drop_packets_total", "kvmnet_port_security_drops_total",
	"kvmnet_dhcp_leases_used", "kvmnet_dhcp_leases_free", "kvmnet_forwards",
	"kvmnet_drift_repairs_total", "kvmnet_scrape_collector_success",
}

const fixtureExposition = `
# HELP kvmnet_conntrack_drops_total Packets dropped because a new connection could not be tracked (table full and nothing could be evicted), summed over CPUs.
# TYPE kvmnet_conntrack_drops_total counter
kvmnet_conntrack_drops_total 34
# HELP kvmnet_conntrack_early_drops_total Unconfirmed or unreplied entries evicted early to make room in a full table, summed over CPUs.
# TYPE kvmnet_conntrack_early_drops_total counter
kvmnet_conntrack_early_drops_total 51
# HELP kvmnet_conntrack_entries Connections in the connection tracking table (net.netfilter.nf_conntrack_count).
# TYPE kvmnet_conntrack_entries gauge
kvmnet_conntrack_entries 42
# HELP kvmnet_conntrack_entries_limit Size of the connection tracking table (net.netfilter.nf_conntrack_max).
# TYPE kvmnet_conntrack_entries_limit gauge
kvmnet_conntrack_entries_limit 262144
# HELP kvmnet_conntrack_insert_failed_total Connections that could not be inserted into the table (a clash with an entry already there), summed over CPUs.
# TYPE kvmnet_conntrack_insert_failed_total counter
kvmnet_conntrack_insert_failed_total 17
# HELP kvmnet_dhcp_leases_free Addresses of the network's DHCP pool that can be handed out now.
# TYPE kvmnet_dhcp_leases_free gauge
kvmnet_dhcp_leases_free{network="dev"} 98
kvmnet_dhcp_leases_free{network="test"} 126
# HELP kvmnet_dhcp_leases_used Addresses of the network's DHCP pool leased, offered or declined now.
# TYPE kvmnet_dhcp_leases_used gauge
kvmnet_dhcp_leases_used{network="dev"} 2
kvmnet_dhcp_leases_used{network="test"} 1
# HELP kvmnet_drift_repairs_total Repairs of drift the reconcile loop made, by kind of repair action.
# TYPE kvmnet_drift_repairs_total counter
kvmnet_drift_repairs_total{kind="add-bridge"} 1
kvmnet_drift_repairs_total{kind="nft"} 2
# HELP kvmnet_forwards Port forwards configured into the network.
# TYPE kvmnet_forwards gauge
kvmnet_forwards{network="dev"} 2
kvmnet_forwards{network="test"} 0
# HELP kvmnet_interface_receive_bytes_total Bytes received by the interface.
# TYPE kvmnet_interface_receive_bytes_total counter
kvmnet_interface_receive_bytes_total{interface="eth0",network="",vm=""} 9.87654321e+08
kvmnet_interface_receive_bytes_total{interface="kv-dev",network="dev",vm=""} 5000
kvmnet_interface_receive_bytes_total{interface="web1-0",network="dev",vm="web1"} 1.2345678901234e+13
# HELP kvmnet_interface_receive_drops_total Received packets the interface dropped (rx_dropped + rx_missed_errors).
# TYPE kvmnet_interface_receive_drops_total counter
kvmnet_interface_receive_drops_total{interface="eth0",network="",vm=""} 2
kvmnet_interface_receive_drops_total{interface="kv-dev",network="dev",vm=""} 0
kvmnet_interface_receive_drops_total{interface="web1-0",network="dev",vm="web1"} 6
# HELP kvmnet_interface_receive_errors_total Receive errors of the interface (rx_errors).
# TYPE kvmnet_interface_receive_errors_total counter
kvmnet_interface_receive_errors_total{interface="eth0",network="",vm=""} 1
kvmnet_interface_receive_errors_total{interface="kv-dev",network="dev",vm=""} 0
kvmnet_interface_receive_errors_total{interface="web1-0",network="dev",vm="web1"} 0
# HELP kvmnet_interface_receive_packets_total Packets received by the interface.
# TYPE kvmnet_interface_receive_packets_total counter
kvmnet_interface_receive_packets_total{interface="eth0",network="",vm=""} 654321
kvmnet_interface_receive_packets_total{interface="kv-dev",network="dev",vm=""} 50
kvmnet_interface_receive_packets_total{interface="web1-0",network="dev",vm="web1"} 40
# HELP kvmnet_interface_transmit_bytes_total Bytes transmitted by the interface.
# TYPE kvmnet_interface_transmit_bytes_total counter
kvmnet_interface_transmit_bytes_total{interface="eth0",network="",vm=""} 1.23456789e+08
kvmnet_interface_transmit_bytes_total{interface="kv-dev",network="dev",vm=""} 7000
kvmnet_interface_transmit_bytes_total{interface="web1-0",network="dev",vm="web1"} 3000
# HELP kvmnet_interface_transmit_drops_total Packets to transmit the interface dropped (tx_dropped).
# TYPE kvmnet_interface_transmit_drops_total counter
kvmnet_interface_transmit_drops_total{interface="eth0",network="",vm=""} 4
kvmnet_interface_transmit_drops_total{interface="kv-dev",network="dev",vm=""} 5
kvmnet_interface_transmit_drops_total{interface="web1-0",network="dev",vm="web1"} 0
# HELP kvmnet_interface_transmit_errors_total Transmit errors of the interface (tx_errors).
# TYPE kvmnet_interface_transmit_errors_total counter
kvmnet_interface_transmit_errors_total{interface="eth0",network="",vm=""} 3
kvmnet_interface_transmit_errors_total{interface="kv-dev",network="dev",vm=""} 0
kvmnet_interface_transmit_errors_total{interface="web1-0",network="dev",vm="web1"} 0
# HELP kvmnet_interface_transmit_packets_total Packets transmitted by the interface.
# TYPE kvmnet_interface_transmit_packets_total counter
kvmnet_interface_transmit_packets_total{interface="eth0",network="",vm=""} 98765
kvmnet_interface_transmit_packets_total{interface="kv-dev",network="dev",vm=""} 70
kvmnet_interface_transmit_packets_total{interface="web1-0",network="dev",vm="web1"} 30
# HELP kvmnet_nft_drop_packets_total Packets dropped by a rule of nftables table inet kvmnet, by the rule's comment (e.g. into-nat-drop). Resets when the table is rebuilt.
# TYPE kvmnet_nft_drop_packets_total counter
kvmnet_nft_drop_packets_total{rule="between-networks-drop"} 0
kvmnet_nft_drop_packets_total{rule="forward-from-drop"} 0
kvmnet_nft_drop_packets_total{rule="guest-to-host-drop"} 3
kvmnet_nft_drop_packets_total{rule="into-nat-drop"} 2
kvmnet_nft_drop_packets_total{rule="nat-elsewhere-drop"} 0
# HELP kvmnet_port_security_drops_total Frames from a VM's tap dropped by port security, by tap and reason (mac, arp, ip, ipv6, dhcp_server, ra, storm, vlan, new_connections). Resets when the table is rebuilt.
# TYPE kvmnet_port_security_drops_total counter
kvmnet_port_security_drops_total{interface="db1-0",reason="arp"} 1
kvmnet_port_security_drops_total{interface="web1-0",reason="ip"} 5
kvmnet_port_security_drops_total{interface="web1-0",reason="mac"} 0
# HELP kvmnet_scrape_collector_success Whether the collector read its source (1) or failed (0) during this scrape; the failure is logged.
# TYPE kvmnet_scrape_collector_success gauge
kvmnet_scrape_collector_success{collector="conntrack"} 1
kvmnet_scrape_collector_success{collector="dhcp"} 1
kvmnet_scrape_collector_success{collector="forwards"} 1
kvmnet_scrape_collector_success{collector="interfaces"} 1
kvmnet_scrape_collector_success{collector="nft"} 1
kvmnet_scrape_collector_success{collector="port_security"} 1
`

// feed makes the daemon-fed metrics of m match fixtureExposition.
func feed(m *Metrics) {
	m.DriftRepaired("nft")
	m.DriftRepaired("nft")
	m.DriftRepaired("add-bridge")
}

// TestGather checks every kvmnet metric's name, help, type, labels and value
// over the fixtures.
func TestGather(t *testing.T) {
	m := New(fixtureOptions())
	feed(m)
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(fixtureExposition), kvmnetMetrics...); err != nil {
		t.Error(err)
	}
}

// TestDurations checks the histograms through the gathered families:
// writing out every bucket would drown what matters.
func TestDurations(t *testing.T) {
	m := New(Options{ProcRoot: t.TempDir()})
	m.ObserveApply(30*time.Millisecond, nil)
	m.ObserveApply(2*time.Second, nil)
	m.ObserveApply(time.Second, errors.New("boom"))
	m.ObserveReconcile(3*time.Millisecond, nil)

	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ name, result string }
	type obs struct {
		count uint64
		sum   float64
	}
	got := map[key]obs{}
	for _, f := range fams {
		if f.GetType() != dto.MetricType_HISTOGRAM || !strings.HasPrefix(f.GetName(), "kvmnet_") {
			continue
		}
		for _, mt := range f.GetMetric() {
			h := mt.GetHistogram()
			got[key{f.GetName(), labelValue(mt, "result")}] = obs{h.GetSampleCount(), h.GetSampleSum()}
		}
	}
	want := map[key]obs{
		{"kvmnet_apply_duration_seconds", "ok"}:        {2, 2.03},
		{"kvmnet_apply_duration_seconds", "error"}:     {1, 1},
		{"kvmnet_reconcile_duration_seconds", "ok"}:    {1, 0.003},
		{"kvmnet_reconcile_duration_seconds", "error"}: {0, 0},
	}
	if d := cmp.Diff(want, got, cmp.AllowUnexported(obs{}), cmp.Comparer(func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 })); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestLint runs the client library's linter over every metric: names,
// units, suffixes, help texts.
func TestLint(t *testing.T) {
	m := New(fixtureOptions())
	feed(m)
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// TestCollectorFailure: a source that fails does not fail the scrape; its
// success gauge says so, and the failure is logged once, not at every
// scrape, and its recovery once.
func TestCollectorFailure(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "net", "dev"), []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	nftErr := errors.New(`nft -j list table inet kvmnet: exit status 1: permission denied`)
	opt := Options{
		Interfaces: func() []Interface { return []Interface{{Name: "eth0"}} },
		RuleDrops:  func(context.Context) (map[string]uint64, error) { return nil, nftErr },
		Pools:      func() []Pool { return []Pool{{Network: "dev", Used: 1, Free: 2}} },
		ProcRoot:   root, // no conntrack files: the module is not loaded
		Log:        slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	m := New(opt)
	const want = `
# HELP kvmnet_scrape_collector_success Whether the collector read its source (1) or failed (0) during this scrape; the failure is logged.
# TYPE kvmnet_scrape_collector_success gauge
kvmnet_scrape_collector_success{collector="conntrack"} 1
kvmnet_scrape_collector_success{collector="dhcp"} 1
kvmnet_scrape_collector_success{collector="interfaces"} 0
kvmnet_scrape_collector_success{collector="nft"} 0
# HELP kvmnet_dhcp_leases_used Addresses of the network's DHCP pool leased, offered or declined now.
# TYPE kvmnet_dhcp_leases_used gauge
kvmnet_dhcp_leases_used{network="dev"} 1
`
	for range 3 {
		if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
			"kvmnet_scrape_collector_success", "kvmnet_dhcp_leases_used", "kvmnet_conntrack_entries", "kvmnet_nft_drop_packets_total"); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "metrics collector failing"); n != 2 {
		t.Errorf("logged %d failures over 3 scrapes, want 2 (interfaces, nft once each):\n%s", n, logs.String())
	}
	nftErr = nil
	if _, err := m.Registry().Gather(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `msg="metrics collector recovered" collector=nft`) {
		t.Errorf("recovery of nft not logged:\n%s", logs.String())
	}
}

// TestServe scrapes /metrics over HTTP on loopback and stops the server
// through its context.
func TestServe(t *testing.T) {
	m := New(fixtureOptions())
	feed(m)
	// A handler made earlier (the daemon could mount one on its API too)
	// shares the registry's handler error counter instead of panicking.
	m.Handler()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.ServeListener(ctx, ln) }()

	url := "http://" + ln.Addr().String() + "/metrics"
	if err := testutil.ScrapeAndCompare(url, strings.NewReader(fixtureExposition), kvmnetMetrics...); err != nil {
		t.Error(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeListener returned %v after its context ended, want nil", err)
	}
}

func TestServeListenError(t *testing.T) {
	m := New(Options{ProcRoot: t.TempDir()})
	err := m.Serve(context.Background(), "256.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), `listening for metrics on "256.0.0.1:1"`) {
		t.Errorf("error %v, want a listen error naming the address", err)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// mustReadFile is mustRead for callbacks, which have no *testing.T: a
// missing fixture panics the test binary, loudly enough.
func mustReadFile(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return string(data)
}
