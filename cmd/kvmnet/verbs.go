package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/spf13/cobra"

	"github.com/kvmnet/kvmnet/internal/api"
	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

func readFileFlag(file string) ([]byte, error) {
	if file == "" {
		return nil, fmt.Errorf("no file given: use -f host.yaml (or -f - for standard input)")
	}
	return model.ReadFile(file)
}

func newPlanCmd(g *globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "plan -f FILE",
		Short: "Show what apply would change, as the commands that would do it by hand",
		Example: `  kvmnet plan -f /etc/kvmnet/host.yaml
  kvmnet --netns kvl-host plan -f examples/lab.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, err := readFileFlag(file)
			if err != nil {
				return err
			}
			b, err := g.openBackend(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			r, err := b.Plan(cmd.Context(), file, doc)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), r.Plan)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the host's network file (YAML)")
	return cmd
}

func newApplyCmd(g *globals) *cobra.Command {
	var file string
	var dryRun bool
	var confirm time.Duration
	var opt engine.ApplyOptions
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Make the kernel match the file, atomically; a failure rolls back",
		Long: `Apply observes the kernel, plans the difference to the file and carries it
out. If any step fails, the steps already done are undone in reverse order
and nothing changes. Applying the same file twice changes nothing the second
time. When a daemon runs, the file is handed to it, and it starts serving
DHCP and DNS for it at once.

An apply that would remove a network, or more than half of the links
kvmnet manages, is refused unless --allow-removal is given: a file that
lost a section looks the same as one meant to remove it. An empty file is
always refused; kvmnet destroy removes everything.`,
		Example: `  kvmnet apply -f /etc/kvmnet/host.yaml
  kvmnet apply -f host.yaml --dry-run     # same as kvmnet plan
  kvmnet apply -f host.yaml --confirm 2m  # rolled back in 2 minutes unless "kvmnet confirm"
  kvmnet apply -f host.yaml --allow-removal  # the file drops a network on purpose`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, err := readFileFlag(file)
			if err != nil {
				return err
			}
			b, err := g.openBackend(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			if dryRun {
				r, err := b.Plan(cmd.Context(), file, doc)
				if err != nil {
					return err
				}
				fmt.Fprint(cmd.OutOrStdout(), r.Plan)
				return nil
			}
			if confirm != 0 {
				c, ok := b.(confirmer)
				if !ok {
					return errors.New("--confirm: this backend cannot hold an apply for confirmation")
				}
				r, err := c.ApplyConfirm(cmd.Context(), file, doc, confirm, opt)
				if err != nil {
					return err
				}
				printApplied(cmd.OutOrStdout(), r)
				printPending(cmd.OutOrStdout(), r.Pending)
				noteManagers(cmd.OutOrStdout(), file, doc)
				return nil
			}
			r, err := b.Apply(cmd.Context(), file, doc, opt)
			if err != nil {
				return err
			}
			printApplied(cmd.OutOrStdout(), r)
			noteManagers(cmd.OutOrStdout(), file, doc)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the host's network file (YAML)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only print the plan")
	cmd.Flags().BoolVar(&opt.AllowRemoval, "allow-removal", false, "let the apply remove networks, or more than half of the links kvmnet manages (refused otherwise, with what it would remove)")
	cmd.Flags().DurationVar(&confirm, "confirm", 0, "roll the apply back after `DURATION` unless `kvmnet confirm` keeps it, or at once if the host's gateway stops answering (like netplan try)")
	return cmd
}

func newDestroyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "destroy",
		Short: "Remove everything kvmnet owns and put back the sysctls it changed",
		Long: `Destroy deletes kvmnet's bridges and taps, frees adopted taps, deletes the
nftables table inet kvmnet and puts back the sysctls kvmnet changed
(ip_forward, and those of host: conntrack:). It touches nothing kvmnet did
not create.`,
		Example: `  kvmnet destroy
  kvmnet --netns kvl-host destroy`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := g.openBackend(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			r, err := b.Destroy(cmd.Context())
			if err != nil {
				return err
			}
			if r.Empty {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing to remove")
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "removed: %s\n", r.Summary)
			}
			return nil
		},
	}
}

func newGetCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:       "get networks|vms|ports|forwards|leases|pending",
		Short:     "Show networks, VM interfaces, port security, port forwards, DHCP leases or an apply waiting for confirmation",
		Example:   "  kvmnet get networks\n  kvmnet get vms -o json\n  kvmnet get forwards\n  kvmnet get leases\n  kvmnet get pending",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"networks", "vms", "ports", "forwards", "leases", "pending"},
		RunE: func(cmd *cobra.Command, args []string) error {
			what := args[0]
			switch what {
			case "networks", "network", "net", "vms", "vm", "ports", "port", "forwards", "forward", "leases", "lease", "pending":
			default:
				return fmt.Errorf("get %q: unknown kind (want networks, vms, ports, forwards, leases or pending)", what)
			}
			if output != "table" && output != "json" && output != "yaml" {
				return fmt.Errorf("-o %q: unknown format (want table, json or yaml)", output)
			}
			b, err := g.openBackend(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			if what == "pending" {
				c, ok := b.(confirmer)
				if !ok {
					return errors.New("get pending: this backend holds no applies for confirmation")
				}
				p, err := c.Pending(cmd.Context())
				if err != nil {
					return err
				}
				if done, err := printData(cmd.OutOrStdout(), p, output); done || err != nil {
					return err
				}
				printPending(cmd.OutOrStdout(), p)
				return nil
			}
			st, err := b.Status(cmd.Context())
			if err != nil {
				return err
			}
			return printStatus(cmd.OutOrStdout(), st, what, output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}

func printStatus(w io.Writer, st *engine.Status, what, format string) error {
	var v any
	switch what {
	case "networks", "network", "net":
		v = st.Networks
	case "vms", "vm", "ports", "port":
		v = st.VMs
	case "forwards", "forward":
		v = st.Forwards
	default:
		v = struct {
			Leases []store.Lease       `json:"leases"`
			Pools  []engine.PoolStatus `json:"pools"`
		}{st.Leases, st.Pools}
	}
	if done, err := printData(w, v, format); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	defer tw.Flush()
	row := func(cols ...string) { fmt.Fprintln(tw, strings.Join(cols, "\t")) }
	switch what {
	case "networks", "network", "net":
		// The backend column shows only on hosts with more than one.
		mixed := slices.ContainsFunc(st.Networks, func(n engine.NetworkStatus) bool { return n.Backend != model.BackendLinux })
		backend := func(b string) []string {
			if !mixed {
				return nil
			}
			return []string{b}
		}
		// So does the fast-path column: the flows each network offloads.
		fast := slices.ContainsFunc(st.Networks, func(n engine.NetworkStatus) bool { return n.Fastpath })
		fastpath := func(header string, n engine.NetworkStatus) []string {
			switch {
			case !fast:
				return nil
			case header != "":
				return []string{header}
			case !n.Fastpath:
				return []string{"-"}
			}
			return []string{fmt.Sprintf("%d offloaded", n.Offloaded)}
		}
		row(append(append(append([]string{"NAME", "MODE"}, backend("BACKEND")...), "BRIDGE", "SUBNET", "GATEWAY", "EGRESS", "STATE", "PORTS", "LEASES", "HOST", "BR_NETFILTER"),
			fastpath("FASTPATH", engine.NetworkStatus{})...)...)
		var notes []string
		for _, n := range st.Networks {
			nf := n.BridgeNF
			if nf == "" {
				nf = "n/a"
			}
			row(append(append(append([]string{n.Name, n.Mode}, backend(n.Backend)...), dash(n.Bridge), dash(n.Subnet), dash(n.Gateway), dash(n.Egress), n.State,
				fmt.Sprintf("%d/%d", n.Attached, n.Ports), fmt.Sprint(n.Leases), dash(strings.Join(n.HostAddrs, ",")), nf), fastpath("", n)...)...)
			for _, note := range n.Notes {
				notes = append(notes, fmt.Sprintf("%s: %s", n.Name, note))
			}
		}
		notes = append(notes, st.Notes...)
		if len(notes) > 0 {
			tw.Flush()
			fmt.Fprintf(w, "\n%s\n", strings.Join(notes, "\n"))
		}
	case "forwards", "forward":
		row("NETWORK", "PROTO", "PORT", "TO", "FROM", "LISTEN", "STATE", "RATE")
		for _, f := range st.Forwards {
			row(f.Network, f.Proto, f.Port, f.To, dash(strings.Join(f.From, ",")), dash(strings.Join(f.Listen, ",")), f.State, dash(f.RateLimit))
		}
	case "ports", "port":
		row("TAP", "VM", "NETWORK", "MAC", "IP", "VLAN", "SPOOFGUARD", "ISOLATED", "INGRESS", "DROPS")
		for _, p := range st.VMs {
			var drops []string
			for _, r := range plan.PortDropReasons {
				if n := p.Drops[r]; n > 0 {
					drops = append(drops, fmt.Sprintf("%s=%d", r, n))
				}
			}
			row(p.Tap, p.VM, p.Network, p.MAC, dash(p.IP), dash(p.VLAN), onOff(p.Spoofguard), onOff(p.Isolated), dash(p.Ingress), dash(strings.Join(drops, " ")))
		}
	case "vms", "vm":
		row("VM", "NETWORK", "TAP", "MAC", "IP", "STATE", "LEASE")
		for _, p := range st.VMs {
			row(p.VM, p.Network, p.Tap, p.MAC, dash(p.IP), p.State, dash(p.Lease))
		}
	default:
		row("NETWORK", "MAC", "IP", "HOSTNAME", "EXPIRES")
		for _, l := range st.Leases {
			row(l.Network, l.MAC, l.IP.String(), dash(l.Hostname), l.Expiry.UTC().Format("2006-01-02T15:04:05Z"))
		}
		tw.Flush()
		if len(st.Pools) == 0 {
			fmt.Fprintln(w, "\n(pool use is shown while the daemon runs)")
		}
		for i, p := range st.Pools {
			if i == 0 {
				fmt.Fprintln(w)
			}
			warn := ""
			if p.Free == 0 {
				warn = "  EXHAUSTED: new guests get no address; widen dhcp.range or shorten dhcp.lease"
			}
			fmt.Fprintf(w, "pool %s: %d addresses, %d used, %d free, %d reserved%s\n", p.Network, p.Size, p.Used, p.Free, p.Reserved, warn)
		}
	}
	return nil
}

// printApplied says what an apply did, and which taps it waits for.
func printApplied(w io.Writer, r *api.PlanResult) {
	if r.Empty {
		fmt.Fprintln(w, "no changes")
	} else {
		fmt.Fprintf(w, "applied: %s\n", r.Summary)
	}
	for _, t := range r.Waiting {
		fmt.Fprintf(w, "waiting for tap %s (adopted by the daemon when it appears)\n", t)
	}
}

// printData prints v as JSON or YAML for -o json|yaml and reports whether
// it did; "table" is left to the caller, anything else is an error.
func printData(w io.Writer, v any, format string) (bool, error) {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return true, enc.Encode(v)
	case "yaml":
		b, err := yaml.MarshalWithOptions(v, yaml.UseJSONMarshaler())
		if err != nil {
			return true, err
		}
		_, err = w.Write(b)
		return true, err
	case "table":
		return false, nil
	}
	return true, fmt.Errorf("-o %q: unknown format (want table, json or yaml)", format)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
