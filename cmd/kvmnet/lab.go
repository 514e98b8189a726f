package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/spf13/cobra"

	"github.com/kvmnet/kvmnet/internal/lab"
	"github.com/kvmnet/kvmnet/internal/model"
)

// labHost marks a command that runs in the machine's own namespace even with
// --netns (see root.go): the lab makes namespaces, it does not live in one.
func labHost() map[string]string { return map[string]string{"netns": "host"} }

func newLabCmd(g *globals) *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Try, test and benchmark kvmnet in a world of network namespaces",
		Long: `A lab is a set of network namespaces that plays a KVM host on a LAN, so kvmnet
can be tried without touching the machine's network:

  PREFIX-lan     the LAN router: bridge lan0 ` + lab.RouterLAN + `/24 with DHCP (` + lab.DHCPFirst + `-` + lab.DHCPLast + `)
                 and DNS (` + lab.RouterName + `, ` + lab.InternetName + `) from dnsmasq; routes, no NAT,
                 to the internet host
  PREFIX-inet    the "internet" host, ` + lab.Internet + `
  PREFIX-host    the KVM host, eth0 ` + lab.HostLAN + `/24 on the LAN: run kvmnet here with
                 --netns PREFIX-host (bridged networks use uplink: eth0)
  PREFIX-vm-VM   one per VM of the file: eth0, eth1... carry the VM's MACs; their
                 other ends are the VMs' taps in PREFIX-host, for kvmnet to adopt

Nodes are named lan, inet, host or by their VM's name. The prefix (default
` + lab.DefaultPrefix + `) lets several labs run at once. State lives in ` + lab.StateRoot + `/PREFIX.`,
		Example: `  kvmnet lab up -f examples/lab.yaml
  kvmnet --netns kvl-host apply -f examples/lab.yaml
  kvmnet lab dhcp web1
  kvmnet lab exec web1 -- ping -c1 ` + lab.Internet + `
  kvmnet lab down`,
		Annotations: labHost(),
	}
	cmd.PersistentFlags().StringVar(&prefix, "prefix", lab.DefaultPrefix, "lab `PREFIX`: letters, digits and '-', at most 10")
	cmd.AddCommand(
		newLabUpCmd(g, &prefix),
		newLabDownCmd(&prefix),
		newLabExecCmd(&prefix),
		newLabDHCPCmd(&prefix),
		newLabStatusCmd(&prefix),
	)
	return cmd
}

// labFlag renders --prefix for the commands we suggest, when not default.
func labFlag(prefix string) string {
	if prefix == lab.DefaultPrefix {
		return ""
	}
	return " --prefix " + prefix
}

func newLabUpCmd(g *globals, prefix *string) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "up [-f FILE]",
		Short: "Build a lab: router, internet host, KVM host, and a namespace per VM of FILE",
		Long: `Up builds the lab and prints what it made and what to run next. Without -f
it builds only the router, the internet host and the KVM host. For each VM
interface of FILE it makes a veth whose host end, named as the interface's
tap, waits in PREFIX-host for kvmnet to adopt it; interfaces with
createTap: true are left to kvmnet. Up refuses when the lab is up already,
and tears down what it made if a step fails.`,
		Example: `  kvmnet lab up -f examples/lab.yaml
  kvmnet lab up --prefix kvl2 -f other.yaml     # a second lab beside the first
  kvmnet lab up                                 # no VMs`,
		Args:        cobra.NoArgs,
		Annotations: labHost(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg *model.Config
			if file != "" {
				var err error
				if cfg, err = labLoadConfig(file); err != nil {
					return err
				}
			}
			// Ctrl-C stops the build, and Up tears down what it made.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			l, err := lab.Up(ctx, lab.Options{Prefix: *prefix, Config: cfg, Log: g.log})
			if err != nil {
				return err
			}
			printLabUp(cmd.OutOrStdout(), l, file)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the host's network file (YAML) whose VMs get namespaces; - for standard input")
	return cmd
}

func labLoadConfig(file string) (*model.Config, error) {
	if file != "-" {
		return model.Load(file)
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return nil, fmt.Errorf("reading config from standard input: %w", err)
	}
	return model.Parse("<stdin>", data)
}

// printLabUp says what Up made and what to run next.
func printLabUp(w io.Writer, l *lab.Lab, file string) {
	p := l.Prefix()
	fmt.Fprintf(w, "lab %q is up (state in %s)\n\n", p, l.Dir())
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNAMESPACE\tWHAT")
	fmt.Fprintf(tw, "lan\t%s\tlan0 %s/24 (DHCP %s-%s, DNS %s %s), inet0 %s/24\n",
		l.NS(lab.NodeLAN), lab.RouterLAN, lab.DHCPFirst, lab.DHCPLast, lab.RouterName, lab.InternetName, lab.RouterInet)
	fmt.Fprintf(tw, "inet\t%s\teth0 %s/24, default via %s\n", l.NS(lab.NodeInet), lab.Internet, lab.RouterInet)
	fmt.Fprintf(tw, "host\t%s\t%s %s/24, default via %s, resolver %s\n", l.NS(lab.NodeHost), lab.HostUplink, lab.HostLAN, lab.RouterLAN, lab.RouterLAN)
	for _, vm := range l.VMs() {
		var parts []string
		for _, k := range vm.Links {
			parts = append(parts, fmt.Sprintf("%s %s <-> tap %s (network %s)", k.Iface, k.MAC, k.Tap, k.Network))
		}
		for _, tap := range vm.Skipped {
			parts = append(parts, "tap "+tap+" left to kvmnet (createTap)")
		}
		if len(parts) == 0 {
			parts = []string{"no interfaces"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", vm.Name, l.NS(vm.Name), strings.Join(parts, "; "))
	}
	tw.Flush()

	pf := labFlag(p)
	if file == "" || file == "-" {
		file = "host.yaml"
	}
	fmt.Fprintf(w, "\nnext:\n")
	fmt.Fprintf(w, "  kvmnet --netns %s apply -f %s\n", l.NS(lab.NodeHost), file)
	fmt.Fprintf(w, "  kvmnet --netns %s daemon &\n", l.NS(lab.NodeHost))
	if vm, ok := firstLinkedVM(l); ok {
		fmt.Fprintf(w, "  kvmnet lab dhcp%s %s\n", pf, vm)
		fmt.Fprintf(w, "  kvmnet lab exec%s %s -- ping -c1 %s\n", pf, vm, lab.Internet)
	} else {
		fmt.Fprintf(w, "  kvmnet lab exec%s host -- ping -c1 %s\n", pf, lab.Internet)
	}
	fmt.Fprintf(w, "  kvmnet lab down%s\n", pf)
}

func firstLinkedVM(l *lab.Lab) (string, bool) {
	for _, vm := range l.VMs() {
		if len(vm.Links) > 0 {
			return vm.Name, true
		}
	}
	return "", false
}

func newLabDownCmd(prefix *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the lab's processes and delete its namespaces and files",
		Long: `Down stops dnsmasq and every process still running in the lab's namespaces
(a kvmnet daemon included), deletes every namespace named PREFIX-*, and
removes /etc/netns/PREFIX-*, kvmnet's state of those namespaces and the lab's
directory. It also cleans up after a crash, and does nothing the second time.`,
		Example: `  kvmnet lab down
  kvmnet lab down --prefix kvl2`,
		Args:        cobra.NoArgs,
		Annotations: labHost(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			// By name, not from the lab's record: that also cleans up a
			// lab whose `up` crashed halfway.
			if err := lab.Down(*prefix); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab %q is down\n", *prefix)
			return nil
		},
	}
}

func newLabExecCmd(prefix *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exec [--prefix P] NODE -- CMD [ARG...]",
		Short: "Run a command in a node of the lab, as ip netns exec does",
		Long: `Exec runs CMD inside NODE's namespace (lan, inet, host or a VM's name), with
the node's own /etc/netns files bound over /etc: a VM resolves names
through the DNS server its lease named. Standard input, output and error are
the command's, and so is the exit status. Flags of kvmnet go before NODE;
everything after NODE belongs to CMD.`,
		Example: `  kvmnet lab exec web1 -- ping -c1 ` + lab.Internet + `
  kvmnet lab exec host -- nft list ruleset
  kvmnet lab exec inet -- iperf3 -s -1
  kvmnet lab exec web1 -- sh                  # a shell inside the VM`,
		Args:        cobra.MinimumNArgs(1),
		Annotations: labHost(),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Flags stop at NODE, so both "web1 -- ping -c1 x" and
			// "web1 ping -c1 x" work; drop the "--" of the first form.
			node, rest := args[0], args[1:]
			if len(rest) > 0 && rest[0] == "--" {
				rest = rest[1:]
			}
			if len(rest) == 0 {
				return fmt.Errorf("lab exec %s: no command given; e.g. kvmnet lab exec %s -- ip addr", node, node)
			}
			l, err := lab.Open(*prefix)
			if err != nil {
				return err
			}
			if !slices.Contains(l.Nodes(), node) {
				return fmt.Errorf("lab %q has no node %q; its nodes are %s", *prefix, node, strings.Join(l.Nodes(), ", "))
			}
			c := l.Command(context.Background(), node, rest...)
			if c.Err != nil {
				return c.Err
			}
			// Become `ip netns exec NS CMD...`: the terminal, signals and
			// the exit status then belong to CMD.
			err = syscall.Exec(c.Path, c.Args, os.Environ())
			return fmt.Errorf("lab exec %s: running %s: %w", node, c.Path, err)
		},
	}
	cmd.Flags().SetInterspersed(false)
	return cmd
}

func newLabDHCPCmd(prefix *string) *cobra.Command {
	var iface, output string
	cmd := &cobra.Command{
		Use:   "dhcp VM [--iface eth0]",
		Short: "Ask for a DHCP lease from inside a VM, as a guest would, and print it",
		Long: `Dhcp runs udhcpc on the VM's interface: it configures the address, the
default route and the MTU the server offered, and writes the VM's resolver to
/etc/netns/PREFIX-vm-VM/resolv.conf (never the machine's /etc/resolv.conf).
On a NAT network the lease comes from kvmnet's daemon, on a bridged one from
the LAN's dnsmasq. It gives up after about five seconds without an answer.`,
		Example: `  kvmnet lab dhcp web1
  kvmnet lab dhcp db1 --iface eth1 -o json`,
		Args:        cobra.ExactArgs(1),
		Annotations: labHost(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := labCheckOutput(output); err != nil {
				return err
			}
			l, err := lab.Open(*prefix)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			lease, err := l.DHCP(ctx, args[0], iface)
			if err != nil {
				return err
			}
			if output != "text" {
				return labWriteValue(cmd.OutOrStdout(), lease, output)
			}
			printLabLease(cmd.OutOrStdout(), args[0], iface, lease)
			return nil
		},
	}
	cmd.Flags().StringVar(&iface, "iface", "eth0", "the VM's `INTERFACE`")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json or yaml")
	return cmd
}

func printLabLease(w io.Writer, vm, iface string, l lab.Lease) {
	fmt.Fprintf(w, "%s %s: %s from %s for %s\n", vm, iface, l.Prefix, l.ServerID, l.LeaseTime)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	defer tw.Flush()
	if l.Router.IsValid() {
		fmt.Fprintf(tw, "  router\t%s\n", l.Router)
	}
	if len(l.DNS) > 0 {
		var dns []string
		for _, a := range l.DNS {
			dns = append(dns, a.String())
		}
		fmt.Fprintf(tw, "  dns\t%s\n", strings.Join(dns, " "))
	}
	if l.Domain != "" {
		fmt.Fprintf(tw, "  domain\t%s\n", l.Domain)
	}
	if l.MTU != 0 {
		fmt.Fprintf(tw, "  mtu\t%d\n", l.MTU)
	}
}

func newLabStatusCmd(prefix *string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the lab's nodes, addresses, processes and LAN leases",
		Example: `  kvmnet lab status
  kvmnet lab status --prefix kvl2 -o json`,
		Args:        cobra.NoArgs,
		Annotations: labHost(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := labCheckOutput(output); err != nil {
				return err
			}
			l, err := lab.Open(*prefix)
			if err != nil {
				return err
			}
			st, err := l.Status(cmd.Context())
			if err != nil {
				return err
			}
			if output != "text" {
				return labWriteValue(cmd.OutOrStdout(), st, output)
			}
			printLabStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json or yaml")
	return cmd
}

func printLabStatus(w io.Writer, st lab.Status) {
	fmt.Fprintf(w, "lab %q, up since %s", st.Prefix, st.Created.Local().Format(time.DateTime))
	if st.Config != "" {
		fmt.Fprintf(w, ", VMs from %s", st.Config)
	}
	fmt.Fprintf(w, "; state in %s\n", st.Dir)
	if st.DNSMasqPID != 0 {
		fmt.Fprintf(w, "dnsmasq: pid %d\n\n", st.DNSMasqPID)
	} else {
		fmt.Fprintf(w, "dnsmasq: not running (the LAN has no DHCP or DNS; `kvmnet lab down%s` and up again)\n\n", labFlag(st.Prefix))
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNAMESPACE\tPROCS\tADDRESSES")
	for _, n := range st.Nodes {
		addrs := strings.Join(n.Addrs, ", ")
		if !n.Present {
			addrs = "(namespace gone)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", n.Node, n.Namespace, n.Procs, addrs)
	}
	tw.Flush()
	if len(st.LANLeases) > 0 {
		fmt.Fprintln(w, "\nLAN leases (dnsmasq):")
		tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  IP\tMAC\tHOSTNAME\tEXPIRES")
		for _, le := range st.LANLeases {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", le.IP, le.MAC, le.Hostname, le.Expires.Local().Format(time.DateTime))
		}
		tw.Flush()
	}
}

func labCheckOutput(format string) error {
	switch format {
	case "text", "json", "yaml":
		return nil
	}
	return fmt.Errorf("-o %q: unknown format (want text, json or yaml)", format)
}

// labWriteValue prints v as JSON or YAML (through its JSON form, so both
// show the same field names).
func labWriteValue(w io.Writer, v any, format string) error {
	if format == "yaml" {
		b, err := yaml.MarshalWithOptions(v, yaml.UseJSONMarshaler())
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
