// Package baseline takes a snapshot of what a host's networking has done
// so far (link counters, port security's drops, the ruleset's version and
// its drop counters, the conntrack table's fill and failures, DHCP pool
// use) and compares a later one with it: what got worse, beyond a
// threshold, between the two. `kvmnet baseline save NAME` stores one in
// the state database; `kvmnet baseline diff NAME` compares the host with
// it.
package baseline

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kvmnet/kvmnet/internal/doctor"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

// LinkStats are one interface's counters (`ip -s link`).
type LinkStats struct {
	RxPackets uint64 `json:"rxPackets"`
	TxPackets uint64 `json:"txPackets"`
	RxErrors  uint64 `json:"rxErrors"`
	TxErrors  uint64 `json:"txErrors"`
	RxDropped uint64 `json:"rxDropped"`
	TxDropped uint64 `json:"txDropped"`
}

// Snapshot is one baseline.
type Snapshot struct {
	Name string    `json:"name"`
	Time time.Time `json:"time"`
	// Links are the counters of every interface, by name.
	Links map[string]LinkStats `json:"links"`
	// Ethtool are the driver counters of every interface that has them
	// (`ethtool -S`), by interface and counter name.
	Ethtool map[string]map[string]uint64 `json:"ethtool,omitempty"`
	// Ruleset is the version of kvmnet's two tables (their comments:
	// a digest of the rules) and the packet counters of its rules, by
	// "chain/comment".
	Ruleset Ruleset `json:"ruleset"`
	// PortDrops are port security's drops, by tap and reason.
	PortDrops map[string]map[string]uint64 `json:"portDrops"`
	// Conntrack is the table's fill and failure counters.
	Conntrack doctor.Conntrack `json:"conntrack"`
	// Pools are the NAT networks' DHCP pool use.
	Pools []doctor.Pool `json:"pools"`
}

// Ruleset is kvmnet's tables as a baseline keeps them.
type Ruleset struct {
	Inet   string            `json:"inet"`
	Bridge string            `json:"bridge"`
	Rules  map[string]uint64 `json:"rules"`
}

// Kernel is what a snapshot reads.
type Kernel interface {
	Observe(ctx context.Context, opt plan.ObserveOptions) (*plan.Observed, error)
	// LinkStats returns every interface's counters.
	LinkStats() (map[string]LinkStats, error)
	// EthtoolStats returns the driver counters (`ethtool -S`) of every
	// interface that has any.
	EthtoolStats() (map[string]map[string]uint64, error)
	// RuleCounters returns the packet counters of table inet kvmnet's
	// rules, by "chain/comment".
	RuleCounters(ctx context.Context) (map[string]uint64, error)
	// DropCounters returns port security's drops per tap and reason.
	DropCounters() (map[string]map[string]uint64, error)
	ConntrackStats() (doctor.Conntrack, error)
}

// Take reads a snapshot of k; cfg and leases give the pools (cfg may be
// nil: nothing applied yet).
func Take(ctx context.Context, name string, k Kernel, cfg *model.Config, leases []store.Lease, now time.Time) (*Snapshot, error) {
	s := &Snapshot{Name: name, Time: now}
	obs, err := k.Observe(ctx, plan.ObserveOptions{})
	if err != nil {
		return nil, err
	}
	s.Ruleset.Inet, s.Ruleset.Bridge = obs.Table.Comment, obs.Bridge.Comment
	if s.Links, err = k.LinkStats(); err != nil {
		return nil, err
	}
	if s.Ethtool, err = k.EthtoolStats(); err != nil {
		return nil, err
	}
	if s.Ruleset.Rules, err = k.RuleCounters(ctx); err != nil {
		return nil, err
	}
	if s.PortDrops, err = k.DropCounters(); err != nil {
		return nil, err
	}
	if s.Conntrack, err = k.ConntrackStats(); err != nil {
		return nil, err
	}
	s.Pools = doctor.Pools(cfg, leases, now)
	return s, nil
}

// Thresholds say how much worse counts as a regression.
type Thresholds struct {
	// Count is the increase of an error, drop or failure counter that
	// counts (default 10): a few drops are the normal life of a link.
	Count uint64
	// Points is the rise of a fill (conntrack table, DHCP pool), in
	// percentage points, that counts (default 10).
	Points float64
}

// DefaultThresholds are the thresholds of `kvmnet baseline diff`.
var DefaultThresholds = Thresholds{Count: 10, Points: 10}

// Change is one difference between a baseline and now.
type Change struct {
	// Kind is link, port-security, rule, conntrack, pool or ruleset.
	Kind    string `json:"kind"`
	Subject string `json:"subject"`
	Metric  string `json:"metric"`
	Before  string `json:"before"`
	After   string `json:"after"`
	// Regression is true when it got worse beyond the thresholds.
	Regression bool   `json:"regression"`
	Note       string `json:"note,omitempty"`
}

// Diff is a comparison of a baseline with now.
type Diff struct {
	Baseline    string        `json:"baseline"`
	Saved       time.Time     `json:"saved"`
	Interval    time.Duration `json:"intervalNs"`
	Regressions int           `json:"regressions"`
	Changes     []Change      `json:"changes"`
}

// Compare compares now with the baseline base.
func Compare(base, now *Snapshot, th Thresholds) Diff {
	d := Diff{Baseline: base.Name, Saved: base.Time, Interval: now.Time.Sub(base.Time)}
	add := func(c Change) {
		d.Changes = append(d.Changes, c)
		if c.Regression {
			d.Regressions++
		}
	}
	// A counter that went down was reset (the link was made again):
	// what it counts now all happened since.
	grew := func(before, after uint64) (uint64, string) {
		if after < before {
			return after, "counters reset since the baseline (the link was recreated)"
		}
		return after - before, ""
	}
	counter := func(kind, subject, metric string, before, after, min uint64) {
		delta, note := grew(before, after)
		if delta == 0 {
			return
		}
		add(Change{Kind: kind, Subject: subject, Metric: metric, Before: fmt.Sprint(before), After: fmt.Sprintf("%d (+%d)", after, delta), Regression: delta >= min, Note: note})
	}
	for _, name := range slices.Sorted(maps.Keys(base.Links)) {
		b := base.Links[name]
		a, ok := now.Links[name]
		if !ok {
			add(Change{Kind: "link", Subject: name, Metric: "present", Before: "yes", After: "no", Note: "gone since the baseline (a VM stopped?)"})
			continue
		}
		counter("link", name, "rx_errors", b.RxErrors, a.RxErrors, th.Count)
		counter("link", name, "tx_errors", b.TxErrors, a.TxErrors, th.Count)
		counter("link", name, "rx_dropped", b.RxDropped, a.RxDropped, th.Count)
		counter("link", name, "tx_dropped", b.TxDropped, a.TxDropped, th.Count)
	}
	for _, name := range slices.Sorted(maps.Keys(now.Links)) {
		if _, ok := base.Links[name]; !ok {
			add(Change{Kind: "link", Subject: name, Metric: "present", Before: "no", After: "yes", Note: "new since the baseline"})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(now.Ethtool)) {
		for _, c := range slices.Sorted(maps.Keys(now.Ethtool[name])) {
			// Drivers name their counters freely; those that count
			// something lost say so in their name.
			if badCounter(c) {
				counter("ethtool", name, c, base.Ethtool[name][c], now.Ethtool[name][c], th.Count)
			}
		}
	}
	for _, tap := range slices.Sorted(maps.Keys(now.PortDrops)) {
		for _, reason := range slices.Sorted(maps.Keys(now.PortDrops[tap])) {
			counter("port-security", tap, "drops "+reason, base.PortDrops[tap][reason], now.PortDrops[tap][reason], th.Count)
		}
	}
	if base.Ruleset.Inet != now.Ruleset.Inet || base.Ruleset.Bridge != now.Ruleset.Bridge {
		add(Change{Kind: "ruleset", Subject: "kvmnet", Metric: "version", Before: base.Ruleset.Inet + " / " + base.Ruleset.Bridge,
			After: now.Ruleset.Inet + " / " + now.Ruleset.Bridge, Note: "kvmnet's rules changed (another kvmnet version or configuration): counters of rules that were rebuilt start again"})
	}
	for _, rule := range slices.Sorted(maps.Keys(now.Ruleset.Rules)) {
		// Only the rules that drop say something got worse.
		if strings.HasSuffix(rule, "-drop") {
			counter("rule", rule, "packets", base.Ruleset.Rules[rule], now.Ruleset.Rules[rule], th.Count)
		}
	}
	compareConntrack(base.Conntrack, now.Conntrack, th, add, counter)
	comparePools(base.Pools, now.Pools, th, add)
	return d
}

// lossWords mark driver counters of lost or damaged frames
// (rx_missed_errors, rx_crc_errors, tx_fifo_errors, rx_queue_0_xdp_drops,
// tx_timeout_count, rx_discards).
var lossWords = []string{"drop", "err", "miss", "discard", "fifo", "crc", "timeout", "fail", "overrun"}

func badCounter(name string) bool {
	n := strings.ToLower(name)
	return slices.ContainsFunc(lossWords, func(w string) bool { return strings.Contains(n, w) })
}

func fill(used, size uint64) float64 {
	if size == 0 {
		return 0
	}
	return 100 * float64(used) / float64(size)
}

func compareConntrack(b, a doctor.Conntrack, th Thresholds, add func(Change), counter func(kind, subject, metric string, before, after, min uint64)) {
	bf, af := fill(b.Count, b.Max), fill(a.Count, a.Max)
	if af-bf >= th.Points {
		add(Change{Kind: "conntrack", Subject: "table", Metric: "fill",
			Before: fmt.Sprintf("%.0f%% (%d of %d)", bf, b.Count, b.Max), After: fmt.Sprintf("%.0f%% (%d of %d)", af, a.Count, a.Max), Regression: true})
	}
	// Any failure is a regression: each is a connection the kernel refused.
	for _, k := range []string{"insert_failed", "drop", "early_drop"} {
		counter("conntrack", "table", k, b.PerCPU[k], a.PerCPU[k], 1)
	}
}

func comparePools(base, now []doctor.Pool, th Thresholds, add func(Change)) {
	before := map[string]doctor.Pool{}
	for _, p := range base {
		before[p.Network] = p
	}
	for _, p := range now {
		b := before[p.Network]
		bf, af := fill(uint64(b.Used), uint64(b.Size)), fill(uint64(p.Used), uint64(p.Size))
		if af-bf >= th.Points {
			add(Change{Kind: "pool", Subject: p.Network, Metric: "leased",
				Before: fmt.Sprintf("%d of %d", b.Used, b.Size), After: fmt.Sprintf("%d of %d", p.Used, p.Size), Regression: true})
		}
	}
}

// String prints the diff for a terminal: regressions first.
func (d Diff) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "baseline %s, saved %s (%s ago)\n", d.Baseline, d.Saved.UTC().Format(time.RFC3339), d.Interval.Round(time.Second))
	if len(d.Changes) == 0 {
		b.WriteString("no changes\n")
		return b.String()
	}
	rows := slices.Clone(d.Changes)
	slices.SortStableFunc(rows, func(x, y Change) int {
		if x.Regression == y.Regression {
			return 0
		}
		if x.Regression {
			return -1
		}
		return 1
	})
	fmt.Fprintf(&b, "%-10s  %-13s  %-24s  %-22s  %-14s  %s\n", "", "KIND", "SUBJECT", "METRIC", "BEFORE", "AFTER")
	for _, c := range rows {
		mark := "changed"
		if c.Regression {
			mark = "REGRESSION"
		}
		fmt.Fprintf(&b, "%-10s  %-13s  %-24s  %-22s  %-14s  %s", mark, c.Kind, c.Subject, c.Metric, c.Before, c.After)
		if c.Note != "" {
			fmt.Fprintf(&b, "  (%s)", c.Note)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "%d regressions\n", d.Regressions)
	return b.String()
}
