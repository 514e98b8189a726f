package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvmnet/kvmnet/internal/bench"
)

// benchFlags are the flags every bench takes.
type benchFlags struct {
	prefix string
	output string
}

// benchContext is canceled by Ctrl-C or SIGTERM, so a bench stops and tears
// its lab down.
func benchContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

// check validates the shared flags; a bench never runs inside --netns: it
// builds namespaces of its own.
func (f *benchFlags) check(g *globals) error {
	if g.netns != "" {
		return errors.New("bench builds its own lab of namespaces; --netns does not apply (use --prefix to name the lab)")
	}
	if f.output != "table" && f.output != "json" {
		return fmt.Errorf("-o %q: unknown format (want table or json)", f.output)
	}
	if f.prefix == "" {
		b := make([]byte, 3)
		rand.Read(b)
		f.prefix = "kb" + hex.EncodeToString(b)
	}
	return nil
}

func (f *benchFlags) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&f.prefix, "prefix", "", "`PREFIX` of the bench's namespaces (default: kb and 6 random hex digits)")
	cmd.PersistentFlags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
}

func newBenchCmd(g *globals) *cobra.Command {
	f := &benchFlags{}
	var (
		rounds    int
		duration  time.Duration
		udpRate   string
		ports     int
		paths     []string
		chart     string
		baseline  string
		probes    int
		maxSpread float64
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure raw, routed, NAT, forward and bridged paths with real traffic, in a lab of its own",
		Long: `Bench builds a lab of network namespaces of its own, applies a host file with
kvmnet in its KVM host, and measures each path a guest's traffic can take:

  raw      two namespaces on one veth pair: this machine's limit
  bridged  a guest on a kvmnet bridged network to the internet host
  routed   a guest behind a host that routes without NAT (bench-made, no kvmnet)
  nat      a guest on a kvmnet NAT network to the internet host (masquerade)
  forward  the internet host to a guest through a kvmnet port forward

Paths this kvmnet cannot apply yet are skipped with a note. For each path
and round it runs iperf3 (TCP with 1 and 4 streams, UDP at a fixed offered
rate), a UDP request/response latency probe, and reads the machine's CPU
time. Paths are interleaved round by round; the table shows medians with the
min–max over the rounds, and ratios between paths. The lab is torn down at
the end, also on Ctrl-C. Progress goes to standard error.

Subcommands measure the control plane (apply) and the DHCP server (dhcp).`,
		Example: `  kvmnet bench
  kvmnet bench --rounds 5 --duration 5s --chart bench.svg
  kvmnet bench -o json > ports-0.json
  kvmnet bench --ports 1000 --baseline ports-0.json
  kvmnet bench --paths raw,nat --rounds 1 --duration 1s
  kvmnet bench apply --sizes 10,100,1000
  kvmnet bench dhcp`,
		Args:        cobra.NoArgs,
		Annotations: labHost(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(g); err != nil {
				return err
			}
			rate, err := bench.ParseRate(udpRate)
			if err != nil {
				return fmt.Errorf("--udp-rate: %w", err)
			}
			var base *bench.NetReport
			if baseline != "" {
				// Read before the bench runs: a bad file fails at once.
				if base, err = readBaseline(baseline); err != nil {
					return fmt.Errorf("--baseline: %w", err)
				}
			}
			return f.run(cmd, func(ctx context.Context, exe string) (report, error) {
				rep, err := bench.RunNet(ctx, bench.NetOptions{
					Kvmnet: exe, Prefix: f.prefix, Rounds: rounds, Duration: duration, UDPRate: rate,
					Ports: ports, Paths: paths, ProbeCount: probes, MaxSpread: maxSpread,
					Progress: bench.NewProgress(cmd.ErrOrStderr()), Log: g.log,
				})
				if err != nil {
					return nil, err
				}
				if base != nil {
					rep.CompareBaseline(base)
				}
				if chart != "" {
					if err := writeChart(chart, rep); err != nil {
						return nil, err
					}
				}
				return rep, nil
			})
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.IntVar(&rounds, "rounds", 3, "interleaved rounds; medians and min–max are over them")
	fl.DurationVar(&duration, "duration", 3*time.Second, "length of each iperf3 run (whole seconds)")
	fl.StringVar(&udpRate, "udp-rate", "500M", "offered UDP `RATE` in bits/s (k, M, G suffixes)")
	fl.IntVar(&ports, "ports", 0, "extra interfaces (kvmnet-created taps) configured on the NAT network")
	fl.StringSliceVar(&paths, "paths", nil, "paths to measure (default: "+strings.Join(bench.AllPaths, ",")+")")
	fl.StringVar(&chart, "chart", "", "also draw the results as an SVG bar chart to `FILE`")
	fl.StringVar(&baseline, "baseline", "", "compare every path with the same path of an earlier run saved with -o json in `FILE` (say, --ports 0 against --ports 1000)")
	fl.IntVar(&probes, "probes", 2000, "latency probes per path and round")
	fl.Float64Var(&maxSpread, "max-spread", bench.DefaultMaxSpread, "warn when a figure's min–max spread exceeds this share of its median")
	cmd.AddCommand(newBenchApplyCmd(g, f), newBenchDHCPCmd(g, f), newBenchShowCmd())
	return cmd
}

func newBenchShowCmd() *cobra.Command {
	var chart, baseline string
	cmd := &cobra.Command{
		Use:   "show FILE",
		Short: "Print a network bench saved with -o json as a table, and draw its chart",
		Example: `  kvmnet bench -o json > bench.json
  kvmnet bench show bench.json --chart bench.svg
  kvmnet bench show ports-1000.json --baseline ports-0.json`,
		Args:        cobra.ExactArgs(1),
		Annotations: labHost(),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := readBaseline(args[0])
			if err != nil {
				return fmt.Errorf("bench show: %w", err)
			}
			if baseline != "" {
				base, err := readBaseline(baseline)
				if err != nil {
					return fmt.Errorf("--baseline: %w", err)
				}
				rep.CompareBaseline(base)
			}
			if chart != "" {
				if err := writeChart(chart, rep); err != nil {
					return err
				}
			}
			return rep.WriteTable(cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&chart, "chart", "", "draw the results as an SVG bar chart to `FILE`")
	cmd.Flags().StringVar(&baseline, "baseline", "", "compare every path with the same path of the run saved in `FILE`")
	return cmd
}

// report is what a bench prints: a table, or JSON with -o json.
type report interface{ WriteTable(io.Writer) error }

// run runs a bench with this kvmnet binary, interrupted (and its lab torn
// down) by Ctrl-C, and prints its report as -o says.
func (f *benchFlags) run(cmd *cobra.Command, bench func(ctx context.Context, exe string) (report, error)) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: finding the kvmnet binary: %w", err)
	}
	ctx, stop := benchContext(cmd.Context())
	defer stop()
	rep, err := bench(ctx, exe)
	if err != nil {
		return benchErr(ctx, err)
	}
	if f.output == "json" {
		return writeJSON(cmd.OutOrStdout(), rep)
	}
	return rep.WriteTable(cmd.OutOrStdout())
}

// benchErr explains an interrupted bench.
func benchErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return errors.New("bench interrupted; its lab is torn down")
	}
	return err
}

// readBaseline reads a report saved with `kvmnet bench -o json`.
func readBaseline(path string) (*bench.NetReport, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rep bench.NetReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("%s is not the output of `kvmnet bench -o json`: %w", path, err)
	}
	if len(rep.Paths) == 0 {
		return nil, fmt.Errorf("%s has no paths; save a run with `kvmnet bench -o json > %s`", path, path)
	}
	return &rep, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeChart(path string, rep *bench.NetReport) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--chart: %w", err)
	}
	if err := rep.WriteSVG(f); err != nil {
		f.Close()
		return fmt.Errorf("--chart: writing %s: %w", path, err)
	}
	return f.Close()
}

// parseSizes reads a comma-separated list of positive integers.
func parseSizes(flag string, list []string) ([]int, error) {
	var out []int
	for _, s := range list {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%s %q: want positive integers separated by commas, e.g. 10,100,1000", flag, s)
		}
		out = append(out, n)
	}
	return out, nil
}

func newBenchApplyCmd(g *globals, f *benchFlags) *cobra.Command {
	var sizes []string
	var rounds int
	cmd := &cobra.Command{
		Use:   "apply [--sizes 10,100,1000]",
		Short: "Time kvmnet apply at scale, next to the same job done the recipe way",
		Long: `Apply measures, for each size N, in fresh namespaces of its own: applying N
VM interfaces (taps kvmnet creates, on one NAT network) from empty, adding
one with N present, removing it again, and a no-op apply. Each is the wall
time of one kvmnet process, as a user sees it. Next to it the same job is
done the recipe way: a shell script with one command per object (ip tuntap
add, ip link set master, ip link set up, one nft command per rule), each a
process of its own. The ratio says how many times faster kvmnet is.`,
		Example: `  kvmnet bench apply
  kvmnet bench apply --sizes 10,100,1000,5000 --rounds 5 -o json`,
		Args:        cobra.NoArgs,
		Annotations: labHost(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(g); err != nil {
				return err
			}
			ns, err := parseSizes("--sizes", sizes)
			if err != nil {
				return err
			}
			return f.run(cmd, func(ctx context.Context, exe string) (report, error) {
				return bench.RunApply(ctx, bench.ApplyOptions{
					Kvmnet: exe, Prefix: f.prefix, Sizes: ns, Rounds: rounds,
					Progress: bench.NewProgress(cmd.ErrOrStderr()),
				})
			})
		},
	}
	cmd.Flags().StringSliceVar(&sizes, "sizes", []string{"10", "100", "1000"}, "numbers of interfaces to apply")
	cmd.Flags().IntVar(&rounds, "rounds", 3, "repetitions of each measurement; medians and min–max are over them")
	return cmd
}

func newBenchDHCPCmd(g *globals, f *benchFlags) *cobra.Command {
	var rates []string
	var duration time.Duration
	var clients []string
	cmd := &cobra.Command{
		Use:   "dhcp [--rates 250,500,1000,2000] [--clients new,1000]",
		Short: "Load kvmnet's DHCP server and dnsmasq with perfdhcp, side by side",
		Long: `Dhcp runs perfdhcp (Debian package kea-admin) from a guest of a NAT network
in a lab of its own, first against kvmnet's DHCP server (the daemon), then
against dnsmasq (--no-ping, the server libvirt and Incus use) serving the
same bridge, range and lease time. At each offered rate it reports the
four-way exchanges per second completed, the drops, and the latency of
DISCOVER→OFFER and REQUEST→ACK (median and 99th percentile). The highest rate
with no drop at all is each server's sustained rate; the highest with fewer
than 1% drops and a p99 under 20 ms is reported too.

--clients names the client populations, each run at every rate: "new" (every
DISCOVER from a MAC the server never saw: each lease is a new one) and/or a
number N of clients that come back (after the first N exchanges every client
asks again for the lease it has).`,
		Example: `  kvmnet bench dhcp
  kvmnet bench dhcp --rates 1000,2000,5000,10000 --clients new
  kvmnet bench dhcp --rates 500,1000,2000,4000 --duration 10s --clients 2000`,
		Args:        cobra.NoArgs,
		Annotations: labHost(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(g); err != nil {
				return err
			}
			rs, err := parseSizes("--rates", rates)
			if err != nil {
				return err
			}
			return f.run(cmd, func(ctx context.Context, exe string) (report, error) {
				return bench.RunDHCP(ctx, bench.DHCPOptions{
					Kvmnet: exe, Prefix: f.prefix, Rates: rs, Duration: duration, Clients: clients,
					Progress: bench.NewProgress(cmd.ErrOrStderr()), Log: g.log,
				})
			})
		},
	}
	cmd.Flags().StringSliceVar(&rates, "rates", []string{"250", "500", "1000", "2000"}, "offered rates, in four-way exchanges per second")
	cmd.Flags().DurationVar(&duration, "duration", 5*time.Second, "length of each perfdhcp run (whole seconds)")
	cmd.Flags().StringSliceVar(&clients, "clients", []string{bench.ClientsNew, "1000"}, `client populations: "new" (MACs never seen) and/or a number of clients that come back`)
	return cmd
}
