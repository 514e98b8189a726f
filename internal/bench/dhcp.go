package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kvmnet/kvmnet/internal/lab"
	"github.com/kvmnet/kvmnet/internal/model"
)

// The DHCP bench's network: a /16 with a pool of 32,766 addresses, so no
// client count the bench allows can exhaust it, and the load tester's own
// static address outside the pool.
const (
	dhcpNetwork   = "dhcpb"
	dhcpBridge    = "kv-dhcpb"
	dhcpSubnet    = "10.220.0.0/16"
	dhcpServer    = "10.220.0.1"
	dhcpFirst     = "10.220.128.1"
	dhcpLast      = "10.220.255.254"
	dhcpLease     = "1h"
	dhcpClientVM  = "pd"
	dhcpClientIP  = "10.220.0.50"
	dhcpClientMAC = "52:54:00:dc:00:01"
	// dhcpWait is perfdhcp's -W: how long it waits for late answers after
	// the test period, so answers in flight are not counted as drops.
	dhcpWait = time.Second
)

// Names of the servers the DHCP bench compares.
const (
	ServerKvmnet  = "kvmnet"
	ServerDNSMasq = "dnsmasq"
)

// DHCPOptions configure the DHCP bench.
type DHCPOptions struct {
	// Kvmnet is the kvmnet binary (applies the network, runs the daemon).
	Kvmnet string
	// Prefix names the bench's lab.
	Prefix string
	// Rates are the offered rates, in four-way exchanges per second.
	Rates []int
	// Duration of each perfdhcp run; whole seconds.
	Duration time.Duration
	// Clients is the number of simulated clients (perfdhcp -R).
	Clients int
	// Progress receives progress; nil discards it.
	Progress *Progress
	// Log receives debug messages; nil discards them.
	Log *slog.Logger
}

// DHCPReport is the result of the DHCP bench.
type DHCPReport struct {
	Started  time.Time `json:"started"`
	Rates    []int     `json:"rates"`
	Duration string    `json:"duration"`
	Clients  int       `json:"clients"`
	Env      Env       `json:"env"`
	// PerfDHCP is the version of the load tester.
	PerfDHCP string `json:"perfdhcp"`
	// Servers are kvmnet's and dnsmasq's results, in that order.
	Servers  []DHCPServer `json:"servers"`
	Targets  []Target     `json:"targets,omitempty"`
	Notes    []string     `json:"notes,omitempty"`
	Warnings []string     `json:"warnings,omitempty"`
}

// DHCPServer is one server's runs.
type DHCPServer struct {
	Server  string     `json:"server"`
	Version string     `json:"version,omitempty"`
	Runs    []PerfDHCP `json:"runs"`
	// Sustained is the highest offered rate answered with no drop at
	// that rate and at every lower rate tried; 0 when the lowest rate
	// already dropped (or gave no report).
	Sustained int `json:"sustained"`
}

// dhcpBench is one run of the DHCP bench.
type dhcpBench struct {
	o      DHCPOptions
	lab    *lab.Lab
	dir    string
	procs  []*daemonProc
	report *DHCPReport
}

// RunDHCP runs the DHCP bench and tears its lab down, also when ctx is
// canceled.
func RunDHCP(ctx context.Context, o DHCPOptions) (rep *DHCPReport, err error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	if o.Progress == nil {
		o.Progress = NewProgress(nil)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	b := &dhcpBench{o: o, report: &DHCPReport{
		Started: time.Now().UTC().Truncate(time.Second), Rates: o.Rates, Duration: o.Duration.String(),
		Clients: o.Clients, Env: environment(ctx),
	}}
	defer func() {
		if terr := b.teardown(); terr != nil {
			err = errors.Join(err, terr)
		}
	}()
	if out, err := run(ctx, "perfdhcp", "-v"); err == nil {
		b.report.PerfDHCP = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "VERSION:"))
	}
	if err := b.setup(ctx); err != nil {
		return nil, err
	}
	o.Progress.Start(2 * len(o.Rates))
	defer o.Progress.Done()

	kv, err := b.serveKvmnet(ctx)
	if err != nil {
		return nil, err
	}
	if err := b.load(ctx, kv); err != nil {
		return nil, err
	}
	b.stopAll()
	dm, err := b.serveDNSMasq(ctx)
	if err != nil {
		return nil, err
	}
	if err := b.load(ctx, dm); err != nil {
		return nil, err
	}
	b.stopAll()
	b.report.Servers = []DHCPServer{*kv, *dm}
	b.report.Targets = dhcpTargets(b.report)
	b.report.Notes = []string{
		"perfdhcp runs in a guest of the NAT network with a static address outside the pool and, as perfdhcp does for DHCPv4, acts as a relay (giaddr set, from UDP port 67): servers answer it by unicast; its port has spoofguard off, since port security rightly drops DHCP server traffic from guests",
		"both servers serve the same bridge, range, lease time and ruleset (kvmnet's, applied) one after the other, each starting with no leases",
		fmt.Sprintf("kvmnet stores every lease in its state database (bbolt, synced to disk) before it acknowledges; its state directory is %s", fsOf(b.dir)),
		"dnsmasq runs with --no-ping (no probe before an offer), --dhcp-authoritative and a lease limit above the client count",
	}
	return b.report, nil
}

func (o *DHCPOptions) check() error {
	if o.Kvmnet == "" {
		return errors.New("bench dhcp: no kvmnet binary given")
	}
	if err := lab.ValidatePrefix(o.Prefix); err != nil {
		return err
	}
	if len(o.Rates) == 0 {
		return errors.New("bench dhcp: no --rates given")
	}
	if o.Duration < time.Second || o.Duration%time.Second != 0 {
		return fmt.Errorf("--duration %s: want whole seconds, at least 1s (perfdhcp -p takes seconds)", o.Duration)
	}
	if o.Clients < 1 || o.Clients > 30000 {
		return fmt.Errorf("--clients %d: want 1 to 30000 (the pool holds 32766)", o.Clients)
	}
	if os.Geteuid() != 0 {
		return errors.New("bench dhcp: needs root, to create network namespaces (try sudo)")
	}
	if _, err := exec.LookPath("perfdhcp"); err != nil {
		return errors.New("bench dhcp: perfdhcp is missing (on Debian: apt-get install kea-admin)")
	}
	for _, tool := range []string{"ip", "dnsmasq", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("bench dhcp: %s is missing (on Debian: apt-get install iproute2 dnsmasq-base nftables)", tool)
		}
	}
	return nil
}

// dhcpHostFile is the DHCP bench's host file: one NAT network with the
// load tester's guest on it, with its static address reserved.
func dhcpHostFile() string {
	return fmt.Sprintf(`# kvmnet bench dhcp: the host file of the bench's lab
networks:
  - name: %s
    mode: nat
    subnet: %s
    egress: %s
    dhcp: {range: %s-%s, lease: %s}
vms:
  - name: %s
    # perfdhcp talks as a DHCP relay, from UDP port 67, which port
    # security forbids guests: the load tester's port goes without.
    interfaces: [{network: %s, mac: "%s", ip: %s, tap: %s-0, security: {spoofguard: false}}]
`, dhcpNetwork, dhcpSubnet, lab.HostUplink, dhcpFirst, dhcpLast, dhcpLease, dhcpClientVM, dhcpNetwork, dhcpClientMAC, dhcpClientIP, dhcpClientVM)
}

// setup builds the lab, applies the host file and gives the load tester
// its address.
func (b *dhcpBench) setup(ctx context.Context) error {
	b.o.Progress.Logf("building lab %q", b.o.Prefix)
	cfg, err := model.Parse("host.yaml", []byte(dhcpHostFile()))
	if err != nil {
		return fmt.Errorf("bench dhcp: the host file: %w", err)
	}
	l, err := lab.Up(ctx, lab.Options{Prefix: b.o.Prefix, Config: cfg, Log: b.o.Log})
	if err != nil {
		return err
	}
	b.lab = l
	if b.dir, err = os.MkdirTemp("", "kvmnet-bench-dhcp-"); err != nil {
		return err
	}
	file := filepath.Join(b.dir, "host.yaml")
	if err := os.WriteFile(file, []byte(dhcpHostFile()), 0o644); err != nil {
		return err
	}
	if _, err := run(ctx, b.o.Kvmnet, "--netns", l.NS(lab.NodeHost), "--state-dir", b.dir, "apply", "-f", file); err != nil {
		return fmt.Errorf("bench dhcp: applying the host file: %w", err)
	}
	_, err = run(ctx, "ip", "-n", l.NS(dhcpClientVM), "addr", "add", dhcpClientIP+"/16", "dev", "eth0")
	return err
}

// serveKvmnet starts kvmnet's daemon and waits until its DHCP server
// listens.
func (b *dhcpBench) serveKvmnet(ctx context.Context) (*DHCPServer, error) {
	b.o.Progress.Logf("starting the kvmnet daemon")
	d, err := startDaemon(ctx, b.o.Kvmnet, b.lab.NS(lab.NodeHost), b.dir)
	if err != nil {
		return nil, err
	}
	b.procs = append(b.procs, d)
	return &DHCPServer{Server: ServerKvmnet, Version: "this build"}, nil
}

// serveDNSMasq starts dnsmasq on the same bridge with the same range and
// lease time, and waits until it listens.
func (b *dhcpBench) serveDNSMasq(ctx context.Context) (*DHCPServer, error) {
	b.o.Progress.Logf("starting dnsmasq")
	srv := &DHCPServer{Server: ServerDNSMasq}
	if out, err := run(ctx, "dnsmasq", "--version"); err == nil {
		srv.Version = strings.TrimPrefix(firstLine(out), "Dnsmasq version ")
		srv.Version, _, _ = strings.Cut(srv.Version, " ")
	}
	args := []string{"netns", "exec", b.lab.NS(lab.NodeHost), "dnsmasq",
		"--keep-in-foreground", "--pid-file", "--conf-file=/dev/null",
		"--no-resolv", "--no-hosts", "--port=0", // DHCP only
		"--bind-interfaces", "--interface=" + dhcpBridge,
		"--dhcp-range=" + dhcpFirst + "," + dhcpLast + ",255.255.0.0," + dhcpLease,
		"--no-ping", "--dhcp-authoritative",
		"--dhcp-lease-max=" + strconv.Itoa(b.o.Clients+1000),
		"--dhcp-leasefile=" + filepath.Join(b.dir, "dnsmasq.leases"),
	}
	out, err := os.Create(filepath.Join(b.dir, "dnsmasq.out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = out, out
	d, err := startProc("dnsmasq", cmd)
	if err != nil {
		return nil, err
	}
	b.procs = append(b.procs, d)
	err = lab.Poll(ctx, "dnsmasq's DHCP server", 10*time.Second, 20*time.Millisecond, func() error {
		if d.exited() {
			msg, _ := os.ReadFile(out.Name())
			return fmt.Errorf("dnsmasq exited: %s", strings.TrimSpace(string(msg)))
		}
		if ok, _ := listening(d.cmd.Process.Pid, "udp", 67); !ok {
			return lab.ErrNotYet
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bench dhcp: %w", err)
	}
	return srv, nil
}

// load runs perfdhcp at every rate against the server now serving.
func (b *dhcpBench) load(ctx context.Context, srv *DHCPServer) error {
	secs := int(b.o.Duration / time.Second)
	for _, rate := range b.o.Rates {
		b.o.Progress.Step(fmt.Sprintf("%-7s  %d exchanges/s for %ds", srv.Server, rate, secs))
		args := []string{"netns", "exec", b.lab.NS(dhcpClientVM), "perfdhcp", "-4",
			"-l", dhcpClientIP, "-r", strconv.Itoa(rate), "-p", strconv.Itoa(secs),
			"-R", strconv.Itoa(b.o.Clients), "-W", strconv.Itoa(int(dhcpWait / time.Microsecond)),
			"-x", "t", dhcpServer}
		runCtx, cancel := context.WithTimeout(ctx, b.o.Duration+30*time.Second)
		out, err := run(runCtx, "ip", args...)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// perfdhcp exits 3 when any exchange failed: its output is read
		// whatever the exit status, and only a missing report is an error.
		res, perr := ParsePerfDHCP(out)
		if perr != nil {
			if err != nil {
				perr = fmt.Errorf("%w (%v)", perr, err)
			}
			b.report.Warnings = append(b.report.Warnings, fmt.Sprintf("%s at %d/s: %v", srv.Server, rate, perr))
			continue
		}
		res.Rate, res.Seconds = rate, secs
		res.ExchangesPerSec = float64(res.Request.Received) / float64(secs)
		srv.Runs = append(srv.Runs, res)
	}
	srv.Sustained = sustainedRate(b.o.Rates, srv.Runs)
	return nil
}

// sustainedRate is the highest of rates up to which every run was clean:
// a server that drops at 250/s does not sustain 500/s because one run at
// 500/s happened to lose nothing. A rate without a run (perfdhcp gave no
// report) ends the climb as a drop does.
func sustainedRate(rates []int, runs []PerfDHCP) int {
	rs := append([]int(nil), rates...)
	sort.Ints(rs)
	sustained := 0
	for _, rate := range rs {
		clean := false
		for _, r := range runs {
			if r.Rate == rate {
				clean = r.Clean()
				break
			}
		}
		if !clean {
			break
		}
		sustained = rate
	}
	return sustained
}

// stopAll stops the DHCP server running now.
func (b *dhcpBench) stopAll() {
	for _, p := range b.procs {
		p.stop(5 * time.Second)
	}
	b.procs = nil
}

func (b *dhcpBench) teardown() error {
	b.stopAll()
	return tearDown(b.lab, b.o.Progress, b.o.Prefix, b.dir)
}

// fsOf names the file system dir is on, for the notes: the type of the
// longest mount point in /proc/self/mounts that contains it.
func fsOf(dir string) string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "on an unknown file system"
	}
	best, typ := "", ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mnt := f[1]
		if (dir == mnt || strings.HasPrefix(dir, strings.TrimSuffix(mnt, "/")+"/")) && len(mnt) > len(best) {
			best, typ = mnt, f[2]
		}
	}
	if typ == "" {
		return "on an unknown file system"
	}
	return fmt.Sprintf("on %s (mounted on %s)", typ, best)
}

// dhcpTargets checks the DHCP goals.
func dhcpTargets(rep *DHCPReport) []Target {
	var kv, dm *DHCPServer
	for i := range rep.Servers {
		switch rep.Servers[i].Server {
		case ServerKvmnet:
			kv = &rep.Servers[i]
		case ServerDNSMasq:
			dm = &rep.Servers[i]
		}
	}
	var out []Target
	if kv != nil && dm != nil {
		// Two servers that both sustain nothing are not a match: the
		// bench (or the lab) is broken, and that is a miss.
		met := kv.Sustained > 0 && kv.Sustained >= dm.Sustained
		got := fmt.Sprintf("kvmnet %d/s, dnsmasq %d/s", kv.Sustained, dm.Sustained)
		if kv.Sustained == 0 && dm.Sustained == 0 {
			got = "neither sustained the lowest rate tried"
		}
		out = append(out, Target{What: "kvmnet sustains at least the rate dnsmasq sustains (0 drops)",
			Got: got, Met: &met})
	}
	if kv != nil {
		what := ">= 1,000 exchanges/s with 0 drops and p99 < 10 ms (kvmnet)"
		t := Target{What: what, Got: "no run at 1,000/s or more"}
		// Show the highest rate that meets the goal, else the lowest one
		// at 1,000/s or more, which missed it.
		var best, first *PerfDHCP
		for i := range kv.Runs {
			r := &kv.Runs[i]
			if r.Rate < 1000 {
				continue
			}
			if first == nil || r.Rate < first.Rate {
				first = r
			}
			if p99 := max(r.Discover.P99Ms, r.Request.P99Ms); r.Clean() && p99 > 0 && p99 < 10 && (best == nil || r.Rate > best.Rate) {
				best = r
			}
		}
		if show := cmpOr(best, first); show != nil {
			met := best != nil
			t = Target{What: what, Got: fmt.Sprintf("at %d/s offered: %.0f exchanges/s, %d drops, p99 %.2f ms",
				show.Rate, show.ExchangesPerSec, show.Drops(), max(show.Discover.P99Ms, show.Request.P99Ms)), Met: &met}
		}
		out = append(out, t)
	}
	return out
}

// WriteTable prints the report for a person.
func (rep *DHCPReport) WriteTable(w io.Writer) error {
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "kvmnet bench dhcp: perfdhcp %s, %d clients, %s per rate; latency in ms\n", rep.PerfDHCP, rep.Clients, rep.Duration)
	fmt.Fprintf(ew, "machine: %s, %d CPU(s)\n\n", rep.Env.Kernel, rep.Env.CPUs)
	tw := tabwriter.NewWriter(ew, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tOFFERED/s\tDONE/s\tDROPS (D/R)\tDISCOVER→OFFER p50 / p99 / max\tREQUEST→ACK p50 / p99 / max")
	for _, s := range rep.Servers {
		for _, r := range s.Runs {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%d (%d/%d)\t%s\t%s\n", s.Server, r.Rate, r.ExchangesPerSec, r.Drops(), r.Discover.Drops, r.Request.Drops,
				latencies(r.Discover), latencies(r.Request))
		}
	}
	tw.Flush()
	fmt.Fprintln(ew)
	for _, s := range rep.Servers {
		v := ""
		if s.Version != "" {
			v = " (" + s.Version + ")"
		}
		if s.Sustained > 0 {
			fmt.Fprintf(ew, "%s%s sustains %d exchanges/s with no drop\n", s.Server, v, s.Sustained)
		} else {
			fmt.Fprintf(ew, "%s%s dropped requests (or gave no report) at the lowest rate tried\n", s.Server, v)
		}
	}
	writeTail(ew, rep.Targets, rep.Notes, rep.Warnings)
	return ew.err
}

// cmpOr returns the first of a and b that is not nil.
func cmpOr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

func latencies(e Exchange) string {
	f := func(v float64) string {
		if v == 0 {
			return "-"
		}
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return f(e.P50Ms) + " / " + f(e.P99Ms) + " / " + f(e.MaxMs)
}
