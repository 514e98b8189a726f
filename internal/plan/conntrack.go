package plan

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/kvmnet/kvmnet/internal/model"
)

// The conntrack sysctls host: conntrack: sets. nf_conntrack_max and the
// timeouts are per network namespace in the kernel's data, but recent
// kernels (6.18 here) make max and buckets writable only from the
// machine's initial namespace: elsewhere the files are mode 0444, and
// the planner refuses what it could not write (Observed.ReadOnly).
const (
	SysctlConntrackMax     = "net.netfilter.nf_conntrack_max"
	SysctlConntrackBuckets = "net.netfilter.nf_conntrack_buckets"
)

// conntrackTimeoutSysctls maps each key of conntrack: timeouts: to its
// sysctl.
var conntrackTimeoutSysctls = map[string]string{
	"tcpEstablished":    "net.netfilter.nf_conntrack_tcp_timeout_established",
	"tcpSynSent":        "net.netfilter.nf_conntrack_tcp_timeout_syn_sent",
	"tcpSynRecv":        "net.netfilter.nf_conntrack_tcp_timeout_syn_recv",
	"tcpFinWait":        "net.netfilter.nf_conntrack_tcp_timeout_fin_wait",
	"tcpCloseWait":      "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
	"tcpLastAck":        "net.netfilter.nf_conntrack_tcp_timeout_last_ack",
	"tcpTimeWait":       "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
	"tcpClose":          "net.netfilter.nf_conntrack_tcp_timeout_close",
	"tcpMaxRetrans":     "net.netfilter.nf_conntrack_tcp_timeout_max_retrans",
	"tcpUnacknowledged": "net.netfilter.nf_conntrack_tcp_timeout_unacknowledged",
	"udp":               "net.netfilter.nf_conntrack_udp_timeout",
	"udpStream":         "net.netfilter.nf_conntrack_udp_timeout_stream",
	"icmp":              "net.netfilter.nf_conntrack_icmp_timeout",
	"icmpv6":            "net.netfilter.nf_conntrack_icmpv6_timeout",
	"generic":           "net.netfilter.nf_conntrack_generic_timeout",
}

// ConntrackTimeoutSysctl returns the sysctl of a conntrack: timeouts: key.
func ConntrackTimeoutSysctl(key string) string { return conntrackTimeoutSysctls[key] }

// ConntrackSysctls are every sysctl host: conntrack: may set, sorted.
func ConntrackSysctls() []string {
	keys := append([]string{SysctlConntrackMax, SysctlConntrackBuckets}, slices.Collect(maps.Values(conntrackTimeoutSysctls))...)
	slices.Sort(keys)
	return keys
}

// ConntrackObserve returns what an observation must read for cfg: the
// conntrack sysctls when the file sets any or kvmnet has originals of
// them to give back, and memory when max or buckets is auto.
func ConntrackObserve(cfg *model.Config, originals map[string]string) (sysctls []string, memory bool) {
	c := cfg.Host.Conntrack
	keys := ConntrackSysctls()
	if c == nil && !slices.ContainsFunc(keys, func(k string) bool { _, ok := originals[k]; return ok }) {
		return nil, false
	}
	return keys, c != nil && (c.Max.Auto || c.Buckets.Auto)
}

// The inputs of conntrack max: auto.
const (
	// CtEntryBytes is what one entry costs in unreclaimable slab,
	// measured on this kernel (issue 17): 382 bytes.
	CtEntryBytes = 382
	// CtHostSessions are the entries set aside for the host itself (its
	// own connections, bridged guests talking to it, forwards' peers).
	CtHostSessions = 65536
	// CtUncappedSessions is what a NAT interface without maxConnections
	// is expected to hold.
	CtUncappedSessions = 4096
	// CtMemoryShare: auto never gives the table more than 1/32 of the
	// host's memory.
	CtMemoryShare = 32
)

// ConntrackSizing is what conntrack max: auto came to, and from what.
type ConntrackSizing struct {
	// Interfaces are the guest interfaces on NAT networks; Sessions the
	// sum of their maxConnections (CtUncappedSessions for each without).
	Interfaces, Sessions int
	// MemTotal is the host's memory in bytes.
	MemTotal uint64
	// Want is 2 × (Sessions + CtHostSessions): closed connections wait out
	// their timeouts in the table too (12,848 left by one SYN-flooding
	// guest at its cap), and warnings at 80% must come before drops.
	Want int
	// Floor is the size the kernel itself picks for this much memory;
	// Ceiling is 1/CtMemoryShare of memory at CtEntryBytes an entry.
	Floor, Ceiling int
	// Max is Want bounded by Floor and Ceiling (Floor winning); Buckets is Max, as the kernel sizes its
	// own hash (one bucket per entry: 262,144 and 262,144 by default here).
	Max, Buckets int
}

// SizeConntrack works out max: auto for cfg on a host with memTotal bytes.
func SizeConntrack(cfg *model.Config, memTotal uint64) ConntrackSizing {
	var s ConntrackSizing
	nat := map[string]bool{}
	for _, n := range cfg.Networks {
		nat[n.Name] = n.Mode == model.ModeNAT
	}
	for _, vm := range cfg.VMs {
		for _, ifc := range vm.Interfaces {
			if !nat[ifc.Network] {
				continue
			}
			s.Interfaces++
			if c := ifc.Security.MaxConnections; c > 0 {
				s.Sessions += c
			} else {
				s.Sessions += CtUncappedSessions
			}
		}
	}
	s.MemTotal = memTotal
	s.Want = 2 * (s.Sessions + CtHostSessions)
	s.Floor = kernelConntrackMax(memTotal)
	s.Ceiling = int(memTotal / CtMemoryShare / CtEntryBytes)
	s.Max = max(min(s.Want, s.Ceiling), s.Floor)
	s.Buckets = min(s.Max, model.CtBucketsMax)
	return s
}

// kernelConntrackMax is nf_conntrack_max as the kernel sizes it at boot
// (nf_conntrack_init_start): 262,144 above 4 GiB, 65,536 above 1 GiB,
// else one entry per 16 KiB per hash head, at least 1024.
func kernelConntrackMax(mem uint64) int {
	const gib = 1 << 30
	switch {
	case mem > 4*gib:
		return 262144
	case mem > gib:
		return 65536
	}
	return max(int(mem/16384/8), 1024)
}

// String is the sizing as a plan prints it.
func (s ConntrackSizing) String() string {
	return fmt.Sprintf("conntrack max auto: 2 × (%d sessions of NAT guest interfaces (%d) + %d for the host) = %d; memory %d MiB: floor %d (the kernel's own size), ceiling %d (1/%d of memory at %d bytes an entry) → max %d, buckets %d",
		s.Sessions, s.Interfaces, CtHostSessions, s.Want, s.MemTotal>>20, s.Floor, s.Ceiling, CtMemoryShare, CtEntryBytes, s.Max, s.Buckets)
}

// conntrack plans host: conntrack:: each setting the file makes is set
// (its first value kept by the store), each it no longer makes is given
// back. What the kernel would refuse where kvmnet runs is refused here,
// at its key.
func (b *builder) conntrack() {
	want := map[string]string{}
	path := map[string]string{}
	if c := b.cfg.Host.Conntrack; c != nil {
		var sizing ConntrackSizing
		if c.Max.Auto || c.Buckets.Auto {
			sizing = SizeConntrack(b.cfg, b.obs.MemTotal)
			b.p.Notes = append(b.p.Notes, sizing.String())
		}
		size := func(key, p string, s model.CtSize, auto int) {
			switch {
			case s.Auto:
				want[key] = strconv.Itoa(auto)
			case s.N > 0:
				want[key] = strconv.Itoa(s.N)
			default:
				return
			}
			path[key] = p
		}
		size(SysctlConntrackMax, "host.conntrack.max", c.Max, sizing.Max)
		size(SysctlConntrackBuckets, "host.conntrack.buckets", c.Buckets, sizing.Buckets)
		for key, t := range c.Timeouts {
			k := conntrackTimeoutSysctls[key]
			want[k] = strconv.Itoa(int(t.Duration / time.Second))
			path[k] = "host.conntrack.timeouts." + key
		}
	}
	for _, key := range slices.Sorted(maps.Keys(want)) {
		cur, ok := b.obs.Sysctls[key]
		switch {
		case !ok:
			// Every conntrack sysctl comes with the module: one message.
			b.errs = append(b.errs, b.cfg.Errorf("host.conntrack", "%s does not exist here: the nf_conntrack module is not loaded; load it (modprobe nf_conntrack) and plan again", key))
			return
		case b.obs.ReadOnly[key]:
			b.errs = append(b.errs, b.cfg.Errorf(path[key], "%s is read-only where kvmnet runs: this kernel lets only the machine's initial network namespace change it (it is global); remove the key, or run kvmnet in the initial namespace and set it there", key))
		default:
			b.wantSysctl(key, want[key])
			if cur != want[key] {
				b.need = append(b.need, SetSysctl{Key: key, Value: want[key], Prev: cur})
			}
		}
	}
	// Settings that left the file go back to what kvmnet found.
	for _, key := range ConntrackSysctls() {
		orig, kept := b.opt.Originals[key]
		cur, ok := b.obs.Sysctls[key]
		if _, wanted := want[key]; wanted || !kept || !ok || cur == orig || b.obs.ReadOnly[key] {
			continue
		}
		b.restore = append(b.restore, SetSysctl{Key: key, Value: orig, Prev: cur})
	}
}

// wantSysctl records a value the plan wants (Plan.Sysctls).
func (b *builder) wantSysctl(key, value string) {
	if b.p.Sysctls == nil {
		b.p.Sysctls = map[string]string{}
	}
	b.p.Sysctls[key] = value
}
