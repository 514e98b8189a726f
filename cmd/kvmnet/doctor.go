package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kvmnet/kvmnet/internal/doctor"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/store"
)

// exitDoctorUnknown is doctor's exit code when it could not look (the
// "unknown" of monitoring plugins); its findings give 0, 1 or 2.
const exitDoctorUnknown = 3

// exitCode makes the process end with code; err, when set, is printed.
type exitCode struct {
	code int
	err  error
}

func (e exitCode) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}

func (e exitCode) Unwrap() error { return e.err }

func newDoctorCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check the host: forwarding, other firewalls, br_netfilter, MTUs, the conntrack table, DHCP pools, taps, kernel features, the daemon",
		Long: `Check the host the way an admin would before trusting its guests'
networking to it. Every finding has a severity, the evidence it rests on
and the command that fixes it. It reads the kernel (never a dump of the
connection-tracking table) and the desired state; it changes nothing.

Exit code: 0 when nothing is worse than info, 1 for a warning, 2 for a
critical finding, 3 when the doctor could not look (as monitoring
plugins do, so a Nagios, Icinga or Sensu check can run it as it is).`,
		Example: "  kvmnet doctor\n  kvmnet doctor -o json | jq '.findings[] | select(.severity != \"ok\")'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return exitCode{exitDoctorUnknown, fmt.Errorf("-o %q: unknown format (want table or json)", output)}
			}
			r, err := runDoctor(cmd, g)
			if err != nil {
				return exitCode{exitDoctorUnknown, err}
			}
			if output == "json" {
				b, err := r.JSON()
				if err != nil {
					return exitCode{exitDoctorUnknown, err}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", b)
			} else {
				fmt.Fprint(cmd.OutOrStdout(), r)
			}
			if c := r.Worst.ExitCode(); c != 0 {
				return exitCode{code: c}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// hostState is what doctor and baseline read besides the kernel: the
// desired state and leases, from the daemon when it runs (b is then
// remote), else from the store.
type hostState struct {
	cfg    *model.Config
	leases []store.Lease
	daemon bool
}

func readHostState(ctx context.Context, b backend) (hostState, error) {
	var h hostState
	_, h.daemon = b.(remote)
	file, doc, err := b.Desired(ctx)
	if err != nil || len(doc) == 0 {
		return h, err
	}
	if h.cfg, err = model.ParseStored(file, doc); err != nil {
		return h, fmt.Errorf("reading the desired state: %w", err)
	}
	st, err := b.Status(ctx)
	if err != nil {
		return h, err
	}
	h.leases = st.Leases
	return h, nil
}

// openHostReader opens this namespace's kernel for reading.
func (g *globals) openHostReader() (hostReader, func(), error) {
	if g.deps.openDoctor == nil {
		return nil, nil, errors.New("no kernel to read")
	}
	return g.deps.openDoctor()
}

// runDoctor gathers the facts (the desired state and leases, the kernel
// of the namespace this process is in) and runs the checks.
func runDoctor(cmd *cobra.Command, g *globals) (doctor.Report, error) {
	ctx := cmd.Context()
	b, err := g.openBackend(ctx)
	if err != nil {
		return doctor.Report{}, err
	}
	defer b.Close()
	h, err := readHostState(ctx, b)
	if err != nil {
		return doctor.Report{}, err
	}
	k, closeKernel, err := g.openHostReader()
	if err != nil {
		return doctor.Report{}, err
	}
	defer closeKernel()
	f, err := doctor.Gather(ctx, k, h.cfg, h.leases, h.daemon)
	if err != nil {
		return doctor.Report{}, err
	}
	if g.netns != "" || g.stateDir != "" {
		// Not the systemd unit's daemon: the one of this namespace.
		f.StartDaemon = "kvmnet" + g.flagsForDaemon() + " daemon"
	}
	return doctor.Run(f), nil
}

// flagsForDaemon are the global flags that name this namespace's daemon.
func (g *globals) flagsForDaemon() string {
	s := ""
	if g.netns != "" {
		s += " --netns " + g.netns
	}
	if g.stateDir != "" {
		s += " --state-dir " + g.stateDir
	}
	return s
}
