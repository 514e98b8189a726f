// Package doctor checks a KVM host the way an experienced admin would
// before trusting its guests' networking to it: what kvmnet needs from
// the kernel (forwarding, a table with room), what other software does
// to it (a FORWARD chain with policy drop, br_netfilter, a second
// masquerade), and what has drifted or run short (MTUs, DHCP pools,
// leases of guests that are gone, taps that are missing). Every finding
// has a severity, the evidence it rests on, and the command that fixes
// it.
//
// The package reads the kernel through the Kernel interface only: the
// real one is kernel.Host, the fake one kernel/fake.Kernel, so every
// check runs in unit tests without root.
package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

// Severity orders findings; a report's exit code is its worst.
type Severity int

// The severities, from fine to broken. Their exit codes are those of
// monitoring plugins (Nagios, Icinga, Sensu): OK and Info 0, Warning 1,
// Critical 2; a doctor that could not look exits 3 (unknown).
const (
	OK Severity = iota
	Info
	Warning
	Critical
)

var severityNames = []string{"ok", "info", "warning", "critical"}

func (s Severity) String() string { return severityNames[s] }

// MarshalText writes the severity's name (for -o json).
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ExitCode is the process exit code for a report whose worst finding is s.
func (s Severity) ExitCode() int {
	switch s {
	case Warning:
		return 1
	case Critical:
		return 2
	}
	return 0
}

// Finding is the result of one check on one subject.
type Finding struct {
	// Check names the check (ip-forward, conntrack-headroom, ...).
	Check    string   `json:"check"`
	Severity Severity `json:"severity"`
	// Subject is what the finding is about: a network, a tap, a table;
	// "" for the host.
	Subject string `json:"subject,omitempty"`
	// Summary says what is wrong (or right) in one sentence.
	Summary string `json:"summary"`
	// Evidence are the values read that the finding rests on.
	Evidence []string `json:"evidence,omitempty"`
	// Fix is the command, or the change, that makes it right.
	Fix string `json:"fix,omitempty"`
}

// Report is every finding, worst first.
type Report struct {
	Worst    Severity  `json:"worst"`
	Findings []Finding `json:"findings"`
}

// Chain is a base chain of an nftables table that is not kvmnet's.
type Chain struct {
	Family, Table, Name string
	// Type is filter, nat or route; Hook prerouting, forward, ...
	Type, Hook string
	Priority   int
	// Policy is accept or drop.
	Policy string
	// Mentions are the names of kvmnet's bridges the chain's rules name
	// (a rule that accepts their traffic mentions them).
	Mentions []string
	// Masquerades are the source prefixes of its masquerade rules ("" for
	// a rule that masquerades every source); only read for nat chains at
	// postrouting.
	Masquerades []string
}

// String names the chain as nft does.
func (c Chain) String() string { return fmt.Sprintf("%s %s %s", c.Family, c.Table, c.Name) }

// Conntrack is the connection-tracking table's fill and failure
// counters (kernel/ct.ReadStats: three small files, never a dump).
type Conntrack struct {
	Loaded bool   `json:"loaded"`
	Count  uint64 `json:"count"`
	Max    uint64 `json:"max"`
	// PerCPU are /proc/net/stat/nf_conntrack's columns summed over CPUs.
	PerCPU map[string]uint64 `json:"perCPU,omitempty"`
}

// Kernel is what the doctor reads.
type Kernel interface {
	Observe(ctx context.Context, opt plan.ObserveOptions) (*plan.Observed, error)
	// ForeignChains lists the base chains of every nftables table that
	// is not kvmnet's, with the rules' mentions the checks need.
	ForeignChains(ctx context.Context, bridges []string) ([]Chain, error)
	// ConntrackStats reads the table's fill and counters.
	ConntrackStats() (Conntrack, error)
	// DeviceMissing says why a device node (/dev/vhost-net) cannot be
	// used, "" when it can.
	DeviceMissing(path string) string
}

// Facts are what the checks look at.
type Facts struct {
	// Config is the desired state; nil when nothing was applied yet.
	Config *model.Config
	Obs    *plan.Observed
	// Foreign are the base chains of other tables.
	Foreign   []Chain
	Conntrack Conntrack
	// VhostNet is why /dev/vhost-net cannot be used ("" when it can).
	VhostNet string
	// Leases are the DHCP leases kvmnet's servers gave.
	Leases []store.Lease
	// Daemon is true when kvmnet's daemon answers on its socket;
	// StartDaemon is the command that starts it here ("" for the
	// systemd unit's).
	Daemon      bool
	StartDaemon string
	Now         time.Time
}

// Features are the kernel features doctor reports missing.
var Features = []plan.Feature{plan.FeatureFlowtable, plan.FeatureVLAN, plan.FeatureBridgeVLAN}

// VhostNetDevice is the device qemu opens for in-kernel virtio-net.
const VhostNetDevice = "/dev/vhost-net"

// Gather reads what the checks need from k.
func Gather(ctx context.Context, k Kernel, cfg *model.Config, leases []store.Lease, daemon bool) (*Facts, error) {
	f := &Facts{Config: cfg, Leases: leases, Daemon: daemon, Now: time.Now()}
	var err error
	if f.Obs, err = k.Observe(ctx, plan.ObserveOptions{Sysctls: sysctlsToRead(cfg), Features: Features}); err != nil {
		return nil, err
	}
	if f.Foreign, err = k.ForeignChains(ctx, bridges(cfg)); err != nil {
		return nil, err
	}
	if f.Conntrack, err = k.ConntrackStats(); err != nil {
		return nil, err
	}
	f.VhostNet = k.DeviceMissing(VhostNetDevice)
	return f, nil
}

// sysctlsToRead are the sysctls the checks read beyond ip_forward: the
// conntrack ones, br_netfilter's, and rp_filter of every link kvmnet
// routes through.
func sysctlsToRead(cfg *model.Config) []string {
	keys := append(plan.ConntrackSysctls(), plan.BridgeNFSysctls...)
	keys = append(keys, rpFilter("all"))
	if cfg != nil {
		for _, n := range cfg.Networks {
			keys = append(keys, rpFilter(n.Bridge))
			if n.Egress != "" {
				keys = append(keys, rpFilter(n.Egress))
			}
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// rpFilter is the rp_filter sysctl of link (or "all", "default"). A
// link name with a dot cannot be written in dotted sysctl form, and
// sysctl.Sysctl would read another path: such links are left out by the
// check.
func rpFilter(link string) string { return "net.ipv4.conf." + link + ".rp_filter" }

// bridges are the bridges of cfg's networks.
func bridges(cfg *model.Config) []string {
	if cfg == nil {
		return nil
	}
	var b []string
	for _, n := range cfg.Networks {
		b = append(b, n.Bridge)
	}
	return b
}

// Run runs every check on f.
func Run(f *Facts) Report {
	var r Report
	for _, c := range checks {
		r.Findings = append(r.Findings, c(f)...)
	}
	slices.SortStableFunc(r.Findings, func(a, b Finding) int { return int(b.Severity) - int(a.Severity) })
	for _, x := range r.Findings {
		r.Worst = max(r.Worst, x.Severity)
	}
	return r
}

// String prints the report for a terminal: one block per finding that
// is not OK, then a count of those that are.
func (r Report) String() string {
	var b strings.Builder
	ok := 0
	for _, x := range r.Findings {
		if x.Severity == OK {
			ok++
			continue
		}
		subject := ""
		if x.Subject != "" {
			subject = " " + x.Subject
		}
		fmt.Fprintf(&b, "%-8s %s%s: %s\n", strings.ToUpper(x.Severity.String()), x.Check, subject, x.Summary)
		for _, e := range x.Evidence {
			fmt.Fprintf(&b, "         evidence: %s\n", e)
		}
		if x.Fix != "" {
			fmt.Fprintf(&b, "         fix: %s\n", x.Fix)
		}
	}
	fmt.Fprintf(&b, "%d checks passed; worst: %s\n", ok, r.Worst)
	return b.String()
}

// JSON is the report for -o json.
func (r Report) JSON() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }
