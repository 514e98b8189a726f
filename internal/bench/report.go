package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Path names, in the order the bench runs and shows them.
const (
	PathRaw     = "raw"
	PathLinuxBr = "linuxbr"
	PathBridged = "bridged"
	PathRouted  = "routed"
	PathNAT     = "nat"
	PathForward = "forward"
	// PathNATRecipe is NAT the way hosts are set up by hand: iptables
	// MASQUERADE and FORWARD accept, no port security. Against it, nat
	// shows what kvmnet's ruleset and port security cost beyond NAT.
	PathNATRecipe = "nat-recipe"
)

// DefaultMaxSpread is the min–max spread (relative to the median) above
// which the bench warns that its ratios cannot be trusted.
const DefaultMaxSpread = 0.10

// NetReport is the result of the network bench: `kvmnet bench -o json`
// prints it.
type NetReport struct {
	// Started is when the bench began.
	Started time.Time `json:"started"`
	// Settings are the flags the bench ran with.
	Settings NetSettings `json:"settings"`
	// Env describes the machine.
	Env Env `json:"env"`
	// Paths holds the measured paths, in bench order.
	Paths []PathResult `json:"paths"`
	// Ratios compare paths: every path to raw, nat and forward to routed
	// and bridged.
	Ratios []RatioResult `json:"ratios,omitempty"`
	// Baseline compares every path with the same path of an earlier run
	// (--baseline FILE): Of is the path, To is "baseline".
	Baseline []RatioResult `json:"baseline,omitempty"`
	// BaselineSettings are the settings of that earlier run.
	BaselineSettings *NetSettings `json:"baselineSettings,omitempty"`
	// Targets are the goals, checked where they can be.
	Targets []Target `json:"targets,omitempty"`
	// PortSecurity says whether kvmnet enforced port security on the
	// NAT network's ports during the run: "enforced" or "not enforced"
	// (empty when no kvmnet path ran).
	PortSecurity string `json:"portSecurity,omitempty"`
	// Skipped lists paths not measured, with the reason.
	Skipped []Skip `json:"skipped,omitempty"`
	// Notes say what the figures do and do not include.
	Notes []string `json:"notes,omitempty"`
	// Warnings flag figures that should not be trusted.
	Warnings []string `json:"warnings,omitempty"`
}

// NetSettings are the knobs of a network bench run.
type NetSettings struct {
	Rounds int `json:"rounds"`
	// Duration of each iperf3 run, e.g. "3s".
	Duration string `json:"duration"`
	// UDPRate is the offered UDP rate in bits/s.
	UDPRate float64 `json:"udpRate"`
	// Ports is the number of extra configured interfaces on the NAT
	// network.
	Ports int `json:"ports"`
	// ProbeCount is the number of latency probes per round.
	ProbeCount int `json:"probeCount"`
	// Prefix is the lab's prefix.
	Prefix string `json:"prefix"`
}

// Env describes the machine a bench ran on.
type Env struct {
	Kernel string `json:"kernel"`
	CPUs   int    `json:"cpus"`
	Iperf3 string `json:"iperf3,omitempty"`
	// BrNetfilter is the machine's net.bridge.bridge-nf-call-iptables,
	// or "absent" (when 1, bridged frames cross netfilter hooks too).
	BrNetfilter string `json:"brNetfilter,omitempty"`
}

// PathResult holds one path's samples and their summaries.
type PathResult struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Samples maps a metric key to one value per round (a failed
	// measurement leaves its round out).
	Samples map[string][]float64 `json:"samples"`
	// Summary maps a metric key to the summary of its samples.
	Summary map[string]Summary `json:"summary"`
}

// Add records a sample; NaN and infinite values are dropped.
func (p *PathResult) Add(metric string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	if p.Samples == nil {
		p.Samples = map[string][]float64{}
	}
	p.Samples[metric] = append(p.Samples[metric], v)
}

// Summarize fills Summary from Samples.
func (p *PathResult) Summarize() {
	p.Summary = map[string]Summary{}
	for _, m := range Metrics {
		if s, ok := p.Samples[m.Key]; ok {
			p.Summary[m.Key] = Summarize(s)
		}
	}
}

// Get returns the summary of metric, or an empty one.
func (p *PathResult) Get(metric string) Summary {
	if s, ok := p.Summary[metric]; ok {
		return s
	}
	return Summarize(nil)
}

// RatioResult compares one metric of path Of to the same of path To.
type RatioResult struct {
	Of     string `json:"of"`
	To     string `json:"to"`
	Metric string `json:"metric"`
	Ratio
}

// Target is a goal and whether it was met.
type Target struct {
	What string `json:"what"`
	// Got is the measured figure, written out.
	Got string `json:"got"`
	// Met is nil when the bench could not tell.
	Met *bool `json:"met,omitempty"`
}

// Skip is a path that was not measured.
type Skip struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// ratioMetrics are the metrics compared between paths.
var ratioMetrics = []string{MetricTCP1, MetricTCP4, MetricLatP50, MetricLatP99, MetricCPU}

// comparisons are the pairs (of, to) whose ratios the report carries: every
// path to raw, and the translated paths to the untranslated ones.
func comparisons(paths []string) [][2]string {
	var out [][2]string
	has := func(p string) bool { return slices.Contains(paths, p) }
	for _, p := range paths {
		if p != PathRaw && has(PathRaw) {
			out = append(out, [2]string{p, PathRaw})
		}
	}
	if has(PathBridged) && has(PathLinuxBr) {
		out = append(out, [2]string{PathBridged, PathLinuxBr})
	}
	if has(PathNAT) && has(PathNATRecipe) {
		out = append(out, [2]string{PathNAT, PathNATRecipe})
	}
	for _, of := range []string{PathNAT, PathForward} {
		for _, to := range []string{PathRouted, PathBridged} {
			if has(of) && has(to) {
				out = append(out, [2]string{of, to})
			}
		}
	}
	return out
}

// Path returns the result of path name.
func (r *NetReport) Path(name string) (*PathResult, bool) {
	for i := range r.Paths {
		if r.Paths[i].Name == name {
			return &r.Paths[i], true
		}
	}
	return nil, false
}

// Finish summarizes the samples and fills in ratios, targets and spread
// warnings. maxSpread is the relative min–max spread above which a figure
// is flagged (0: DefaultMaxSpread).
func (r *NetReport) Finish(maxSpread float64) {
	if maxSpread <= 0 {
		maxSpread = DefaultMaxSpread
	}
	var names []string
	for i := range r.Paths {
		r.Paths[i].Summarize()
		names = append(names, r.Paths[i].Name)
	}
	r.Ratios = nil
	for _, c := range comparisons(names) {
		of, _ := r.Path(c[0])
		to, _ := r.Path(c[1])
		for _, m := range ratioMetrics {
			if q, ok := RatioOf(of.Get(m), to.Get(m)); ok {
				r.Ratios = append(r.Ratios, RatioResult{Of: c[0], To: c[1], Metric: m, Ratio: q})
			}
		}
	}
	r.Targets = r.targets()
	r.Warnings = append(r.Warnings, spreadWarnings(r, maxSpread)...)
}

// RatioFor returns the ratio of metric between two paths.
func (r *NetReport) RatioFor(of, to, metric string) (Ratio, bool) {
	for _, q := range r.Ratios {
		if q.Of == of && q.To == to && q.Metric == metric {
			return q.Ratio, true
		}
	}
	return Ratio{}, false
}

// targets checks the data-path goals that one run can check.
func (r *NetReport) targets() []Target {
	var out []Target
	goal := func(of, to string, min float64) {
		for _, m := range []string{MetricTCP1, MetricTCP4} {
			info, _ := Metric(m)
			what := fmt.Sprintf("%s %s >= %.0f%% of %s", of, info.Title, min*100, to)
			q, ok := r.RatioFor(of, to, m)
			if !ok {
				reason := "not measured"
				if _, has := r.Path(of); has {
					if _, has := r.Path(to); has {
						reason = "no samples"
					}
				}
				out = append(out, Target{What: what, Got: reason})
				continue
			}
			out = append(out, judge(what, q, min, r.Settings.Rounds))
		}
	}
	goal(PathNAT, PathRouted, 0.95)
	// Bridged is judged against the same topology without kvmnet (a
	// plain Linux bridge with the uplink as a port), never against raw:
	// raw is one veth pair, bridged two bridges and a router, and their
	// ratio says what the topology costs, not what kvmnet costs.
	goal(PathBridged, PathLinuxBr, 0.95)
	// NAT is judged against the same hops NATed by hand: throughput, and
	// the latency of a round trip (at most 5% more).
	goal(PathNAT, PathNATRecipe, 0.97)
	what := fmt.Sprintf("%s latency p50 <= 105%% of %s", PathNAT, PathNATRecipe)
	if q, ok := r.RatioFor(PathNAT, PathNATRecipe, MetricLatP50); ok {
		out = append(out, judgeMax(what, q, 1.05, r.Settings.Rounds))
	} else {
		out = append(out, Target{What: what, Got: "not measured"})
	}
	return out
}

// judgeMax is judge for an upper bound: met when the ratio is at most
// max, undecided when the rounds lie on both sides of it.
func judgeMax(what string, q Ratio, max float64, rounds int) Target {
	got := fmt.Sprintf("%.1f%%", q.Value*100)
	switch {
	case rounds < 2:
		return Target{What: what, Got: got + " (undecided: one round, no spread to judge by)"}
	case q.Low <= max && q.High > max:
		return Target{What: what, Got: fmt.Sprintf("%s (undecided: the rounds give %.1f-%.1f%%, on both sides of the bound)", got, q.Low*100, q.High*100)}
	}
	met := q.Value <= max
	return Target{What: what, Got: got, Met: &met}
}

// judge checks a ratio against its bound only when the rounds support a
// verdict: with one round there is no spread to judge by, and when the
// rounds' range (Low–High) holds the bound, the machine's noise, not the
// path, decides which side the median falls on. Either is reported
// undecided (Met nil) with the figures, never as met or missed.
func judge(what string, q Ratio, min float64, rounds int) Target {
	got := fmt.Sprintf("%.1f%%", q.Value*100)
	switch {
	case rounds < 2:
		return Target{What: what, Got: got + " (undecided: one round, no spread to judge by)"}
	case q.Low < min && q.High >= min:
		return Target{What: what, Got: fmt.Sprintf("%s (undecided: the rounds give %.1f-%.1f%%, on both sides of the bound)", got, q.Low*100, q.High*100)}
	}
	met := q.Value >= min
	return Target{What: what, Got: got, Met: &met}
}

// baselineMin is the share of the baseline's throughput every path must
// keep (the goal for 1,000 extra protected ports against none).
const baselineMin = 0.97

// CompareBaseline compares every path of r with the same path of base, an
// earlier run (say, without extra ports), and adds a target: every path
// keeps at least 97% of its baseline TCP throughput. Call it after Finish.
func (r *NetReport) CompareBaseline(base *NetReport) {
	r.Baseline = nil
	settings := base.Settings
	r.BaselineSettings = &settings
	for _, p := range r.Paths {
		bp, ok := base.Path(p.Name)
		if !ok {
			continue
		}
		for _, m := range ratioMetrics {
			if q, ok := RatioOf(p.Get(m), bp.Get(m)); ok {
				r.Baseline = append(r.Baseline, RatioResult{Of: p.Name, To: "baseline", Metric: m, Ratio: q})
			}
		}
	}
	worst, worstWhat, worstQ := math.Inf(1), "", Ratio{}
	for _, q := range r.Baseline {
		if (q.Metric == MetricTCP1 || q.Metric == MetricTCP4) && q.Value < worst {
			m, _ := Metric(q.Metric)
			worst, worstWhat, worstQ = q.Value, q.Of+" "+m.Title, q.Ratio
		}
	}
	what := fmt.Sprintf("every path >= %.0f%% of its baseline TCP throughput (%d extra ports here, %d in the baseline)", baselineMin*100, r.Settings.Ports, base.Settings.Ports)
	if math.IsInf(worst, 1) {
		r.Targets = append(r.Targets, Target{What: what, Got: "no path in common with the baseline"})
		return
	}
	t := judge(what, worstQ, baselineMin, min(r.Settings.Rounds, base.Settings.Rounds))
	t.Got = "lowest: " + worstWhat + " at " + t.Got
	r.Targets = append(r.Targets, t)
}

// spreadMetrics are the metrics whose spread is checked: the ones the
// ratios are built from.
var spreadMetrics = []string{MetricTCP1, MetricTCP4, MetricLatP50, MetricCPU}

func spreadWarnings(r *NetReport, maxSpread float64) []string {
	var out []string
	if r.Settings.Rounds < 2 {
		return []string{"one round only: there is no spread to judge the figures by; use --rounds 3 or more before trusting a ratio"}
	}
	for _, p := range r.Paths {
		for _, key := range spreadMetrics {
			s := p.Get(key)
			if sp := s.Spread(); sp > maxSpread {
				m, _ := Metric(key)
				out = append(out, fmt.Sprintf("%s %s varies by %.0f%% between rounds (%s–%s %s), more than %.0f%%: ratios built on it cannot be trusted; use more --rounds, a longer --duration or a quieter machine",
					p.Name, m.Title, sp*100, m.Format(s.Min), m.Format(s.Max), m.Unit, maxSpread*100))
			}
		}
	}
	return out
}

// tableColumns are the columns of the main table.
var tableColumns = []string{MetricTCP1, MetricTCP4, MetricUDP, MetricUDPLoss, MetricUDPJitter, MetricLatP50, MetricLatP99, MetricCPU}

// WriteTable prints the report for a person: the classic bridged-vs-NAT
// table (medians, with min–max over the rounds), the ratios, the targets,
// and what was skipped, noted and warned about.
func (r *NetReport) WriteTable(w io.Writer) error {
	ew := &errWriter{w: w}
	s := r.Settings
	fmt.Fprintf(ew, "kvmnet bench: %d round(s) of %s per run, UDP offered at %s, %d extra port(s) on the NAT network\n",
		s.Rounds, s.Duration, FormatRate(s.UDPRate), s.Ports)
	fmt.Fprintf(ew, "machine: %s, %d CPU(s), %s; figures are medians (min–max over rounds)\n\n", r.Env.Kernel, r.Env.CPUs, r.Env.Iperf3)

	tw := tabwriter.NewWriter(ew, 0, 8, 2, ' ', 0)
	head := []string{"PATH"}
	for _, k := range tableColumns {
		m, _ := Metric(k)
		head = append(head, fmt.Sprintf("%s (%s)", strings.ToUpper(m.Title), m.Unit))
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, p := range r.Paths {
		row := []string{p.Name}
		for _, k := range tableColumns {
			m, _ := Metric(k)
			row = append(row, m.FormatSummary(p.Get(k)))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()

	if len(r.Ratios) > 0 {
		fmt.Fprintf(ew, "\nchange of the median (range over rounds):\n")
		tw = tabwriter.NewWriter(ew, 0, 8, 2, ' ', 0)
		head := []string{"  COMPARED"}
		for _, k := range ratioMetrics {
			m, _ := Metric(k)
			head = append(head, strings.ToUpper(m.Title))
		}
		fmt.Fprintln(tw, strings.Join(head, "\t"))
		for _, c := range comparisons(pathNames(r)) {
			row := []string{"  " + c[0] + " vs " + c[1]}
			for _, k := range ratioMetrics {
				q, ok := r.RatioFor(c[0], c[1], k)
				row = append(row, formatChange(q, ok))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		tw.Flush()
	}
	if len(r.Baseline) > 0 {
		fmt.Fprintf(ew, "\nchange against the baseline run (%d extra ports there, %d here):\n", r.BaselineSettings.Ports, r.Settings.Ports)
		tw = tabwriter.NewWriter(ew, 0, 8, 2, ' ', 0)
		head := []string{"  PATH"}
		for _, k := range ratioMetrics {
			m, _ := Metric(k)
			head = append(head, strings.ToUpper(m.Title))
		}
		fmt.Fprintln(tw, strings.Join(head, "\t"))
		for _, p := range r.Paths {
			row := []string{"  " + p.Name}
			for _, k := range ratioMetrics {
				var q Ratio
				ok := false
				for _, b := range r.Baseline {
					if b.Of == p.Name && b.Metric == k {
						q, ok = b.Ratio, true
					}
				}
				row = append(row, formatChange(q, ok))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		tw.Flush()
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintln(ew)
	}
	for _, sk := range r.Skipped {
		fmt.Fprintf(ew, "skipped %s: %s\n", sk.Path, sk.Reason)
	}
	writeTail(ew, r.Targets, r.Notes, r.Warnings)
	return ew.err
}

func pathNames(r *NetReport) []string {
	var out []string
	for _, p := range r.Paths {
		out = append(out, p.Name)
	}
	return out
}

// formatChange renders a ratio as a change in percent with its range:
// "-4.8% (-6.1…-3.0)".
func formatChange(q Ratio, ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%+.1f%% (%+.1f…%+.1f)", q.Percent(), (q.Low-1)*100, (q.High-1)*100)
}

// FormatRate renders bits/s the way iperf3's -b takes it: 500M, 1G, 10k.
func FormatRate(bps float64) string {
	for _, u := range []struct {
		div  float64
		unit string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "K"}} {
		if bps >= u.div {
			return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", bps/u.div), "0"), ".") + u.unit
		}
	}
	return fmt.Sprintf("%.0f", bps)
}

// ParseRate reads a rate as iperf3's -b does: a number with an optional
// k, m or g suffix (powers of 1000), in bits/s.
func ParseRate(s string) (float64, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			mult, t = 1e3, t[:n-1]
		case 'm', 'M':
			mult, t = 1e6, t[:n-1]
		case 'g', 'G':
			mult, t = 1e9, t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("rate %q: want a positive number of bits/s with an optional k, M or G suffix, e.g. 500M", s)
	}
	return v * mult, nil
}

// errWriter keeps the first write error so printing code stays linear.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
