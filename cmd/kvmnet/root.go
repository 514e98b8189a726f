package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/kvmnet/kvmnet/internal/netnsexec"
)

// globals are the flags every command takes.
type globals struct {
	netns     string
	stateDir  string
	logLevel  string
	logFormat string
	log       *slog.Logger
	deps      deps
}

// StateDir is where the state database lives for this namespace.
func (g *globals) StateDir() string {
	if g.stateDir != "" {
		return g.stateDir
	}
	if g.netns != "" {
		return filepath.Join("/var/lib/kvmnet/netns", g.netns)
	}
	return "/var/lib/kvmnet"
}

// Socket is the daemon's unix socket for this namespace.
func (g *globals) Socket() string {
	if g.stateDir != "" {
		return filepath.Join(g.stateDir, "kvmnet.sock")
	}
	if g.netns != "" {
		return filepath.Join("/run/kvmnet", g.netns+".sock")
	}
	return "/run/kvmnet/kvmnet.sock"
}

func newRootCmd() *cobra.Command { return newRootCmdWith(realDeps()) }

// newRootCmdWith builds the commands on d.
func newRootCmdWith(d deps) *cobra.Command {
	g := &globals{deps: d}
	root := &cobra.Command{
		Use:           "kvmnet",
		Short:         "Networking for KVM hosts: bridged and NAT networks from one file",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			// The daemon logs its decisions; one-shot commands print their
			// result and log only warnings unless asked.
			if !cmd.Flags().Changed("log-level") && cmd.Name() != "daemon" {
				g.logLevel = "warn"
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
			}
			opts := &slog.HandlerOptions{Level: lvl}
			format := g.logFormat
			if format == "" {
				// systemd sets JOURNAL_STREAM when stderr goes to the
				// journal: log JSON there, text on a terminal.
				format = "text"
				if os.Getenv("JOURNAL_STREAM") != "" {
					format = "json"
				}
			}
			switch format {
			case "text":
				g.log = slog.New(slog.NewTextHandler(os.Stderr, opts))
			case "json":
				// One JSON object per line, for journald and log shippers.
				g.log = slog.New(slog.NewJSONHandler(os.Stderr, opts))
			default:
				return fmt.Errorf("--log-format %q: want text or json", g.logFormat)
			}
			// Commands that must not run inside the namespace (lab) opt
			// out; commands a daemon may serve enter it only when none
			// does (openBackend).
			if g.netns != "" && cmd.Annotations["netns"] != "host" && cmd.Annotations["netns"] != "daemon" {
				return netnsexec.Enter(g.netns)
			}
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.netns, "netns", "", "work inside network namespace `NAME` (as created by `ip netns add`)")
	pf.StringVar(&g.stateDir, "state-dir", "", "state directory (default /var/lib/kvmnet, or /var/lib/kvmnet/netns/NAME with --netns)")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "", "log format: text or json (default: json under systemd, text otherwise)")
	root.AddCommand(newPlanCmd(g), newApplyCmd(g), newDestroyCmd(g), newGetCmd(g), newForwardCmd(g), newVMCmd(g), newExportCmd(g), newHistoryCmd(g), newRollbackCmd(g), newEventsCmd(g), newConfirmCmd(g), newConfirmTimerCmd(g), newDaemonCmd(g), newDocsCmd(g), newBenchCmd(g), newLabCmd(g), newStoreCmd(g), newDoctorCmd(g), newBaselineCmd(g))
	return root
}
