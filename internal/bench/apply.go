package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Steps of the apply bench, in table order.
const (
	StepFromEmpty = "from empty"
	StepAddOne    = "add one"
	StepRemoveOne = "remove one"
	StepNoop      = "no-op"
)

var applySteps = []string{StepFromEmpty, StepAddOne, StepRemoveOne, StepNoop}

// Addresses of the apply bench's namespaces: an uplink with a default
// route, so NAT networks have an egress. Nothing is ever sent.
const (
	applyUplinkAddr = "172.31.0.2/24"
	applyGateway    = "172.31.0.1"
	applySubnet     = "10.200.0.0/16"
	applyGateway16  = "10.200.0.1/16"
	applyBridge     = "kv-bench"
)

// ApplyOptions configure the apply bench.
type ApplyOptions struct {
	// Kvmnet is the kvmnet binary to time.
	Kvmnet string
	// Prefix names the bench's namespaces (PREFIX-ak for kvmnet,
	// PREFIX-ar for the recipe).
	Prefix string
	// Sizes are the numbers of interfaces to apply.
	Sizes []int
	// Rounds repeats each measurement in fresh namespaces.
	Rounds int
	// Progress receives progress; nil discards it.
	Progress *Progress
}

// ApplyReport is the result of the apply bench.
type ApplyReport struct {
	Started time.Time `json:"started"`
	Sizes   []int     `json:"sizes"`
	Rounds  int       `json:"rounds"`
	Env     Env       `json:"env"`
	// Rows hold one step at one size; times are in milliseconds.
	Rows     []ApplyRow `json:"rows"`
	Targets  []Target   `json:"targets,omitempty"`
	Notes    []string   `json:"notes,omitempty"`
	Warnings []string   `json:"warnings,omitempty"`
}

// ApplyRow is one step at one size.
type ApplyRow struct {
	N    int    `json:"n"`
	Step string `json:"step"`
	// Kvmnet is the wall time of the kvmnet process, in ms.
	Kvmnet Summary `json:"kvmnetMs"`
	// Recipe is the wall time of the recipe script, in ms; no samples
	// for the no-op step, which a recipe does not have.
	Recipe Summary `json:"recipeMs"`
	// Commands is the number of commands the recipe runs for the step.
	Commands int `json:"recipeCommands,omitempty"`
	// Speedup is Recipe over Kvmnet: how many times faster kvmnet is.
	Speedup *Ratio `json:"speedup,omitempty"`

	kvmnet, recipe []float64
}

// applyBench is one run of the apply bench.
type applyBench struct {
	o    ApplyOptions
	dir  string
	made []string // namespaces created, to delete
}

// RunApply runs the apply bench and tears down its namespaces, also when
// ctx is canceled.
func RunApply(ctx context.Context, o ApplyOptions) (rep *ApplyReport, err error) {
	if o.Progress == nil {
		o.Progress = NewProgress(nil)
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	b := &applyBench{o: o}
	defer func() {
		if terr := b.teardown(); terr != nil {
			err = errors.Join(err, terr)
		}
	}()
	if b.dir, err = os.MkdirTemp("", "kvmnet-bench-apply-"); err != nil {
		return nil, err
	}
	rep = &ApplyReport{Started: time.Now().UTC().Truncate(time.Second), Sizes: o.Sizes, Rounds: o.Rounds, Env: environment(ctx)}
	o.Progress.Start(len(o.Sizes) * o.Rounds * 2)
	defer o.Progress.Done()
	for _, n := range o.Sizes {
		rows := make([]ApplyRow, len(applySteps))
		for i, s := range applySteps {
			rows[i] = ApplyRow{N: n, Step: s}
		}
		for round := 1; round <= o.Rounds; round++ {
			o.Progress.Step(fmt.Sprintf("N=%d round %d/%d: kvmnet", n, round, o.Rounds))
			t, err := b.kvmnetRound(ctx, n, round)
			if err != nil {
				return nil, err
			}
			for i := range rows {
				rows[i].kvmnet = append(rows[i].kvmnet, t[i])
			}
			o.Progress.Step(fmt.Sprintf("N=%d round %d/%d: recipe", n, round, o.Rounds))
			t, cmds, err := b.recipeRound(ctx, n, round)
			if err != nil {
				return nil, err
			}
			for i := range rows {
				if cmds[i] > 0 {
					rows[i].recipe = append(rows[i].recipe, t[i])
					rows[i].Commands = cmds[i]
				}
			}
		}
		for i := range rows {
			r := &rows[i]
			r.Kvmnet, r.Recipe = Summarize(r.kvmnet), Summarize(r.recipe)
			if q, ok := RatioOf(r.Recipe, r.Kvmnet); ok {
				r.Speedup = &q
			}
		}
		rep.Rows = append(rep.Rows, rows...)
	}
	rep.Targets = applyTargets(rep)
	rep.Notes = []string{
		"times are wall times of whole processes as a user runs them: `kvmnet --netns NS apply` (which enters the namespace and re-executes itself) and `ip netns exec NS sh SCRIPT`",
		"the interfaces are taps kvmnet creates (createTap) on one NAT network; the recipe creates the same taps, bridge, address and a ruleset of the same shape, one command per object and per rule",
		"every round starts from fresh namespaces",
	}
	return rep, nil
}

func (o *ApplyOptions) check() error {
	if o.Kvmnet == "" {
		return errors.New("bench apply: no kvmnet binary given")
	}
	if len(o.Sizes) == 0 {
		return errors.New("bench apply: no --sizes given")
	}
	if o.Rounds < 1 {
		return fmt.Errorf("--rounds %d: want at least 1", o.Rounds)
	}
	for _, n := range o.Sizes {
		if n < 1 || n > 50000 {
			return fmt.Errorf("--sizes: %d: want 1 to 50000 interfaces", n)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("bench apply: needs root, to create network namespaces (try sudo)")
	}
	return freePrefix(o.Prefix)
}

// freePrefix refuses a prefix whose namespaces or lab exist: the bench
// must not touch anything it did not make.
func freePrefix(prefix string) error {
	if strings.ContainsAny(prefix, "/ ") || prefix == "" {
		return fmt.Errorf("bench: prefix %q: want letters, digits and '-'", prefix)
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			return fmt.Errorf("bench: namespace %q already starts with %q; pick another --prefix", e.Name(), prefix+"-")
		}
	}
	return nil
}

// newNS creates a namespace with an uplink eth0 (a veth whose peer stays in
// the namespace) and a default route, as bench/apply-scale.sh does.
func (b *applyBench) newNS(ctx context.Context, name string) error {
	if _, err := run(ctx, "ip", "netns", "add", name); err != nil {
		return err
	}
	b.made = append(b.made, name)
	return ipCmds(ctx,
		[]string{"-n", name, "link", "set", "lo", "up"},
		[]string{"-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer"},
		[]string{"-n", name, "addr", "add", applyUplinkAddr, "dev", "eth0"},
		[]string{"-n", name, "link", "set", "eth0", "up"},
		[]string{"-n", name, "route", "add", "default", "via", applyGateway, "dev", "eth0", "onlink"},
	)
}

// delNS deletes a namespace the bench made.
func (b *applyBench) delNS(ctx context.Context, name string) error {
	if _, err := run(ctx, "ip", "netns", "del", name); err != nil {
		return err
	}
	b.made = slices.DeleteFunc(b.made, func(s string) bool { return s == name })
	return nil
}

// hostFile writes the host file with n interfaces and returns its path.
func (b *applyBench) hostFile(n int) (string, error) {
	path := filepath.Join(b.dir, fmt.Sprintf("host-%d.yaml", n))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	var s strings.Builder
	fmt.Fprintf(&s, "networks:\n  - {name: bench, mode: nat, subnet: %s, egress: eth0}\nvms:\n", applySubnet)
	for i := range n {
		fmt.Fprintf(&s, "  - name: vm%d\n    interfaces: [{network: bench, mac: \"52:54:00:%02x:%02x:%02x\", tap: b%d, createTap: true}]\n",
			i, i>>16&0xff, i>>8&0xff, i&0xff, i)
	}
	return path, os.WriteFile(path, []byte(s.String()), 0o644)
}

// timed runs fn and returns its wall time in milliseconds.
func timed(fn func() error) (float64, error) {
	start := time.Now()
	err := fn()
	return float64(time.Since(start).Microseconds()) / 1e3, err
}

// kvmnetRound times the four steps with kvmnet in a fresh namespace.
func (b *applyBench) kvmnetRound(ctx context.Context, n, round int) ([]float64, error) {
	ns := b.o.Prefix + "-ak"
	if err := b.newNS(ctx, ns); err != nil {
		return nil, err
	}
	state := filepath.Join(b.dir, fmt.Sprintf("state-%d-%d", n, round))
	fileN, err := b.hostFile(n)
	if err != nil {
		return nil, err
	}
	fileN1, err := b.hostFile(n + 1)
	if err != nil {
		return nil, err
	}
	apply := func(file, want string) func() error {
		return func() error {
			out, err := run(ctx, b.o.Kvmnet, "--netns", ns, "--state-dir", state, "apply", "-f", file)
			if err != nil {
				return fmt.Errorf("bench apply: %w", err)
			}
			if !strings.HasPrefix(out, want) {
				return fmt.Errorf("bench apply: kvmnet apply -f %s printed %q, want %q", filepath.Base(file), firstLine(out), want)
			}
			return nil
		}
	}
	var times []float64
	for _, s := range []struct {
		file, want string
	}{{fileN, "applied"}, {fileN1, "applied"}, {fileN, "applied"}, {fileN, "no changes"}} {
		t, err := timed(apply(s.file, s.want))
		if err != nil {
			return nil, err
		}
		times = append(times, t)
	}
	if err := b.delNS(ctx, ns); err != nil {
		return nil, err
	}
	return times, os.RemoveAll(state)
}

// recipeRound times the same job done the recipe way in a fresh
// namespace: a shell script with one command per object. It returns the
// times and the number of commands of each step (0: the step has no
// recipe).
func (b *applyBench) recipeRound(ctx context.Context, n, round int) ([]float64, []int, error) {
	ns := b.o.Prefix + "-ar"
	if err := b.newNS(ctx, ns); err != nil {
		return nil, nil, err
	}
	steps := [][]string{recipeFromEmpty(n), recipeAddTap(n), {"ip link del b" + fmt.Sprint(n)}}
	times := make([]float64, len(applySteps))
	cmds := make([]int, len(applySteps))
	for i, lines := range steps {
		script := filepath.Join(b.dir, fmt.Sprintf("recipe-%d-%d.sh", n, i))
		body := "#!/bin/sh\n# the recipe way: one command per object\nset -e\n" + strings.Join(lines, "\n") + "\n"
		if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
			return nil, nil, err
		}
		t, err := timed(func() error {
			_, err := run(ctx, "ip", "netns", "exec", ns, "sh", script)
			return err
		})
		if err != nil {
			return nil, nil, fmt.Errorf("bench apply: the recipe: %w", err)
		}
		times[i], cmds[i] = t, len(lines)
	}
	_ = round
	return times, cmds, b.delNS(ctx, ns)
}

// recipeFromEmpty is the recipe for n interfaces: the bridge, its address,
// one tap at a time, a ruleset like kvmnet's one rule at a time, and
// forwarding.
func recipeFromEmpty(n int) []string {
	lines := []string{
		"ip link add " + applyBridge + " type bridge",
		"ip addr add " + applyGateway16 + " dev " + applyBridge,
		"ip link set " + applyBridge + " up",
	}
	for i := range n {
		lines = append(lines, recipeAddTap(i)...)
	}
	br := applyBridge
	lines = append(lines,
		"nft add table inet recipe",
		"nft 'add chain inet recipe input { type filter hook input priority filter; policy accept; }'",
		"nft add rule inet recipe input iifname "+br+" udp dport 67 accept",
		"nft add rule inet recipe input iifname "+br+" meta l4proto '{ tcp, udp }' th dport 53 accept",
		"nft add rule inet recipe input iifname "+br+" ct state established,related accept",
		"nft add rule inet recipe input iifname "+br+" icmp type echo-request accept",
		"nft add rule inet recipe input iifname "+br+" counter drop",
		"nft 'add chain inet recipe forward { type filter hook forward priority filter; policy accept; }'",
		"nft add rule inet recipe forward ct state established,related accept",
		"nft add rule inet recipe forward iifname "+br+" oifname "+br+" accept",
		"nft add rule inet recipe forward iifname "+br+" oifname eth0 accept",
		"nft add rule inet recipe forward oifname "+br+" counter drop",
		"nft add rule inet recipe forward iifname "+br+" counter drop",
		"nft 'add chain inet recipe postrouting { type nat hook postrouting priority srcnat; }'",
		"nft add rule inet recipe postrouting ip saddr "+applySubnet+" oifname eth0 masquerade",
		"sysctl -qw net.ipv4.ip_forward=1",
	)
	return lines
}

// recipeAddTap is the recipe for one interface: create, enslave, bring up.
func recipeAddTap(i int) []string {
	tap := fmt.Sprintf("b%d", i)
	return []string{
		"ip tuntap add dev " + tap + " mode tap vnet_hdr",
		"ip link set " + tap + " master " + applyBridge,
		"ip link set " + tap + " up",
	}
}

// teardown deletes the namespaces the bench made and its files.
func (b *applyBench) teardown() error {
	var errs []error
	for _, ns := range slices.Clone(b.made) {
		if err := b.delNS(context.Background(), ns); err != nil {
			errs = append(errs, err)
		}
	}
	if b.dir != "" {
		if err := os.RemoveAll(b.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// applyTargets checks the control-plane goals at 1,000 interfaces.
func applyTargets(rep *ApplyReport) []Target {
	row := func(step string) (ApplyRow, bool) {
		for _, r := range rep.Rows {
			if r.N == 1000 && r.Step == step {
				return r, true
			}
		}
		return ApplyRow{}, false
	}
	under := func(what, step string, ms float64) Target {
		r, ok := row(step)
		if !ok || !r.Kvmnet.Valid() {
			return Target{What: what, Got: "not measured (add 1000 to --sizes)"}
		}
		met := r.Kvmnet.Median < ms
		return Target{What: what, Got: fmt.Sprintf("%.1f ms", r.Kvmnet.Median), Met: &met}
	}
	out := []Target{
		under("no-op apply with 1,000 interfaces < 100 ms", StepNoop, 100),
		under("adding one interface to 1,000 < 20 ms", StepAddOne, 20),
	}
	what := "apply of 1,000 from empty >= 20x faster than the recipe way"
	if r, ok := row(StepFromEmpty); ok && r.Speedup != nil {
		met := r.Speedup.Value >= 20
		out = append(out, Target{What: what, Got: fmt.Sprintf("%.1fx", r.Speedup.Value), Met: &met})
	} else {
		out = append(out, Target{What: what, Got: "not measured (add 1000 to --sizes)"})
	}
	return out
}

// WriteTable prints the report for a person.
func (rep *ApplyReport) WriteTable(w io.Writer) error {
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "kvmnet bench apply: %d round(s) per size; wall times in ms, medians (min–max)\n", rep.Rounds)
	fmt.Fprintf(ew, "machine: %s, %d CPU(s)\n\n", rep.Env.Kernel, rep.Env.CPUs)
	tw := tabwriter.NewWriter(ew, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "N\tSTEP\tKVMNET (ms)\tRECIPE (ms)\tRECIPE COMMANDS\tRECIPE ÷ KVMNET")
	ms := MetricInfo{Scale: 1, Digits: 1}
	for _, r := range rep.Rows {
		recipe, cmds, speed := "-", "-", "-"
		if r.Recipe.Valid() {
			recipe, cmds = ms.FormatSummary(r.Recipe), fmt.Sprint(r.Commands)
		}
		if r.Speedup != nil {
			speed = fmt.Sprintf("%.1fx", r.Speedup.Value)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", r.N, r.Step, ms.FormatSummary(r.Kvmnet), recipe, cmds, speed)
	}
	tw.Flush()
	writeTail(ew, rep.Targets, rep.Notes, rep.Warnings)
	return ew.err
}

// writeTail prints targets, notes and warnings.
func writeTail(w io.Writer, targets []Target, notes, warnings []string) {
	if len(targets) > 0 {
		fmt.Fprintf(w, "\ntargets:\n")
		for _, t := range targets {
			mark := "n/a "
			if t.Met != nil {
				mark = map[bool]string{true: "met ", false: "MISS"}[*t.Met]
			}
			fmt.Fprintf(w, "  %s  %s: %s\n", mark, t.What, t.Got)
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\nnotes:\n")
		for _, n := range notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	for _, wn := range warnings {
		fmt.Fprintf(w, "\nwarning: %s", wn)
	}
	if len(warnings) > 0 {
		fmt.Fprintln(w)
	}
}
