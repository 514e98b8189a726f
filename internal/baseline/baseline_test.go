package baseline_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/baseline"
	"github.com/kvmnet/kvmnet/internal/doctor"
	"github.com/kvmnet/kvmnet/internal/kernel/fake"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/store"
)

const hostFile = `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0, dhcp: {range: 192.168.100.100-192.168.100.109}}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", tap: web1-0}]
`

func kernel() *fake.Kernel {
	k := fake.LANHost()
	k.Links = map[string]baseline.LinkStats{"eth0": {RxPackets: 1000, TxPackets: 900}, "web1-0": {RxPackets: 50, TxPackets: 60}}
	k.Ethtool = map[string]map[string]uint64{"eth0": {"rx_missed_errors": 0, "rx_queue_0_packets": 10}}
	k.Rules = map[string]uint64{"forward/between-networks-drop": 3, "forward/established": 500}
	k.Drops = map[string]map[string]uint64{"web1-0": {"ip": 0, "mac": 0}}
	k.Conntrack = doctor.Conntrack{Loaded: true, Count: 100, Max: 1000, PerCPU: map[string]uint64{"insert_failed": 0}}
	return k
}

func take(t *testing.T, k *fake.Kernel, cfg *model.Config, leases []store.Lease, at time.Time) *baseline.Snapshot {
	t.Helper()
	s, err := baseline.Take(context.Background(), "q1", k, cfg, leases, at)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestNoChange: the same host twice has no changes and no regression.
func TestNoChange(t *testing.T) {
	k := kernel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := baseline.Compare(take(t, k, nil, nil, t0), take(t, k, nil, nil, t0.Add(time.Hour)), baseline.DefaultThresholds)
	if len(d.Changes) != 0 || d.Regressions != 0 {
		t.Errorf("unchanged host:\n%s", d)
	}
}

// TestRegressions: drops on a tap, port security drops, a drop rule's
// counter, conntrack fill and failures and a pool filling up are
// regressions beyond the thresholds; growth below them, traffic and a
// counter reset are not.
func TestRegressions(t *testing.T) {
	cfg, err := model.Parse("host.yaml", []byte(hostFile))
	if err != nil {
		t.Fatal(err)
	}
	k := kernel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	base := take(t, k, cfg, nil, t0)

	k.Links["web1-0"] = baseline.LinkStats{RxPackets: 5000, TxPackets: 6000, TxDropped: 57, RxErrors: 3}
	k.Links["eth0"] = baseline.LinkStats{RxPackets: 10, TxPackets: 10} // recreated
	k.Drops["web1-0"]["ip"] = 40
	k.Ethtool["eth0"]["rx_missed_errors"] = 25
	k.Ethtool["eth0"]["rx_queue_0_packets"] = 100000
	k.Rules["forward/between-networks-drop"] = 20
	k.Rules["forward/established"] = 90000
	k.Conntrack.Count = 400
	k.Conntrack.PerCPU["insert_failed"] = 2
	var leases []store.Lease
	for i := range 5 {
		leases = append(leases, store.Lease{Network: "dev", MAC: "52:54:00:00:01:0" + string(rune('0'+i)), IP: netip.AddrFrom4([4]byte{192, 168, 100, byte(100 + i)}), Expiry: t0.Add(2 * time.Hour)})
	}
	d := baseline.Compare(base, take(t, k, cfg, leases, t0.Add(time.Hour)), baseline.DefaultThresholds)

	want := map[string]bool{
		"link web1-0 tx_dropped":                     true,
		"link web1-0 rx_errors":                      false, // 3 < 10
		"port-security web1-0 drops ip":              true,
		"rule forward/between-networks-drop packets": true,
		"conntrack table fill":                       true,
		"conntrack table insert_failed":              true,
		"pool dev leased":                            true,
		"link eth0 rx_dropped":                       false, // never listed: no growth
	}
	got := map[string]bool{}
	for _, c := range d.Changes {
		got[c.Kind+" "+c.Subject+" "+c.Metric] = c.Regression
	}
	for k, w := range want {
		if k == "link eth0 rx_dropped" {
			if _, listed := got[k]; listed {
				t.Errorf("%s listed without growth", k)
			}
			continue
		}
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("%s: listed %t, regression %t; want regression %t\n%s", k, ok, g, w, d)
		}
	}
	if _, ok := got["ethtool eth0 rx_queue_0_packets"]; ok {
		t.Errorf("a driver's traffic counter listed as a change:\n%s", d)
	}
	if _, ok := got["rule forward/established packets"]; ok {
		t.Errorf("traffic through an accept rule listed as a change:\n%s", d)
	}
	if d.Regressions != 7 || !strings.Contains(d.String(), "REGRESSION  link") {
		t.Errorf("regressions %d, want 7:\n%s", d.Regressions, d)
	}
}
