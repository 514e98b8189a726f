package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvmnet/kvmnet/internal/baseline"
)

// baselineName is what a baseline may be called.
var baselineName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func newBaselineCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "baseline save|diff|ls",
		Short: "Save the host's counters as a baseline, and compare the host with one later",
		Long: `A baseline is a snapshot of what the host's networking has done so far:
every interface's packet, error and drop counters and its driver's
counters (ethtool -S), port security's drops
per tap and reason, the version of kvmnet's rules and the counters of
those that drop, the connection-tracking table's fill and failures, and
each NAT network's DHCP pool use. It is kept in the state database.

baseline diff compares the host now with a saved baseline and lists what
changed; a change is a regression when an error, drop or failure counter
grew by --count or more (conntrack failures: by one), or a fill rose by
--points percentage points or more. It exits 1 when there is a
regression, 0 when not, 3 when it could not compare.`,
		Example: "  kvmnet baseline save before-upgrade\n  kvmnet baseline diff before-upgrade\n  kvmnet baseline diff before-upgrade -o json --count 100\n  kvmnet baseline ls",
	}
	cmd.AddCommand(newBaselineSaveCmd(g), newBaselineDiffCmd(g), newBaselineLsCmd(g))
	return cmd
}

func checkBaselineName(name string) error {
	if !baselineName.MatchString(name) {
		return fmt.Errorf("baseline name %q: want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// takeBaseline opens what a snapshot reads and takes one.
func takeBaseline(cmd *cobra.Command, g *globals, b backend, name string) (*baseline.Snapshot, error) {
	h, err := readHostState(cmd.Context(), b)
	if err != nil {
		return nil, err
	}
	k, closeKernel, err := g.openHostReader()
	if err != nil {
		return nil, err
	}
	defer closeKernel()
	return baseline.Take(cmd.Context(), name, k, h.cfg, h.leases, time.Now())
}

func newBaselineSaveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "save NAME",
		Short:   "Save the host's counters now as baseline NAME (replacing one of that name)",
		Example: "  kvmnet baseline save quarterly",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkBaselineName(args[0]); err != nil {
				return err
			}
			b, err := g.openBackend(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			s, err := takeBaseline(cmd, g, b, args[0])
			if err != nil {
				return err
			}
			data, err := json.Marshal(s)
			if err != nil {
				return err
			}
			if err := b.SaveBaseline(cmd.Context(), args[0], data); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved baseline %s: %d interfaces (%d with driver counters), %d rule counters, %d ports with port security drops, conntrack %d of %d, %d pools\n",
				args[0], len(s.Links), len(s.Ethtool), len(s.Ruleset.Rules), len(s.PortDrops), s.Conntrack.Count, s.Conntrack.Max, len(s.Pools))
			return nil
		},
	}
}

func newBaselineDiffCmd(g *globals) *cobra.Command {
	var output string
	th := baseline.DefaultThresholds
	cmd := &cobra.Command{
		Use:     "diff NAME",
		Short:   "Compare the host now with baseline NAME; exit 1 on a regression",
		Example: "  kvmnet baseline diff quarterly\n  kvmnet baseline diff quarterly -o json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			unknown := func(err error) error { return exitCode{exitDoctorUnknown, err} }
			if output != "table" && output != "json" {
				return unknown(fmt.Errorf("-o %q: unknown format (want table or json)", output))
			}
			if err := checkBaselineName(args[0]); err != nil {
				return unknown(err)
			}
			b, err := g.openBackend(cmd.Context())
			if err != nil {
				return unknown(err)
			}
			defer b.Close()
			data, err := b.Baseline(cmd.Context(), args[0])
			if err != nil {
				return unknown(fmt.Errorf("%w (kvmnet baseline ls lists the saved ones; kvmnet baseline save %s makes it)", err, args[0]))
			}
			var base baseline.Snapshot
			if err := json.Unmarshal(data, &base); err != nil {
				return unknown(fmt.Errorf("reading baseline %q: %w", args[0], err))
			}
			now, err := takeBaseline(cmd, g, b, "now")
			if err != nil {
				return unknown(err)
			}
			d := baseline.Compare(&base, now, th)
			if output == "json" {
				out, err := json.MarshalIndent(d, "", "  ")
				if err != nil {
					return unknown(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", out)
			} else {
				fmt.Fprint(cmd.OutOrStdout(), d)
			}
			if d.Regressions > 0 {
				return exitCode{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().Uint64Var(&th.Count, "count", th.Count, "growth of an error or drop counter that is a regression")
	cmd.Flags().Float64Var(&th.Points, "points", th.Points, "rise of a fill (conntrack table, DHCP pool), in percentage points, that is a regression")
	return cmd
}

func newBaselineLsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the saved baselines",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := g.openBackend(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			names, err := b.Baselines(cmd.Context())
			if err != nil {
				return err
			}
			for _, n := range names {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		},
	}
}
