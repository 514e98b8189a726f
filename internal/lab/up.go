package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kvmnet/kvmnet/internal/model"
)

// Up builds a lab: namespaces, links, addresses, routes, resolvers, and the
// LAN's dnsmasq, answering before Up returns. It refuses to start when the
// prefix's namespaces exist already. If a step fails, Up tears down what it
// made and returns the step's error (joined with any teardown error).
func Up(ctx context.Context, o Options) (*Lab, error) {
	prefix := o.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("lab", prefix)
	if err := checkConfig(o.Config); err != nil {
		return nil, fmt.Errorf("building lab %q: %w", prefix, err)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("building lab %q: needs root, to create network namespaces (try sudo)", prefix)
	}
	for _, tool := range []string{"ip", "sysctl", "dnsmasq"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("building lab %q: %s is missing (on Debian: apt-get install iproute2 procps dnsmasq-base)", prefix, tool)
		}
	}
	warnConfig(log, o.Config)
	if err := claim(prefix); err != nil {
		return nil, err
	}

	b := &builder{prefix: prefix, cfg: o.Config, log: log, st: state{
		Prefix:  prefix,
		Dir:     labDir(prefix),
		Created: time.Now().UTC().Truncate(time.Second),
	}}
	if o.Config != nil {
		b.st.Config = o.Config.Source
	}
	if err := b.build(ctx); err != nil {
		log.Info("tearing down the half-built lab", "err", err)
		if derr := down(prefix, log); derr != nil {
			return nil, errors.Join(err, fmt.Errorf("tearing down the half-built lab %q: %w", prefix, derr))
		}
		return nil, err
	}
	return &Lab{st: b.st, log: log}, nil
}

// claim makes sure the prefix is free and takes it by creating the lab's
// directory (os.Mkdir fails for the second of two racing Ups).
func claim(prefix string) error {
	downHint := fmt.Sprintf("run `kvmnet lab down --prefix %s` first", prefix)
	nss, err := namespaces()
	if err != nil {
		return err
	}
	// Down deletes every namespace starting with "PREFIX-", so no lab may
	// have a prefix that starts with another's followed by '-'.
	for _, other := range labsOnDisk() {
		if other != prefix && (strings.HasPrefix(other, prefix+"-") || strings.HasPrefix(prefix, other+"-")) {
			return fmt.Errorf("lab prefix %q overlaps lab %q (the names of one start with the other's); pick another --prefix", prefix, other)
		}
	}
	for _, ns := range nss {
		for _, node := range []string{NodeLAN, NodeInet, NodeHost} {
			if other, ok := strings.CutSuffix(ns, "-"+node); ok && other != prefix && strings.HasPrefix(prefix, other+"-") {
				return fmt.Errorf("lab prefix %q overlaps lab %q (namespace %q); pick another --prefix", prefix, other, ns)
			}
		}
	}
	var mine []string
	for _, ns := range nss {
		if strings.HasPrefix(ns, prefix+"-") {
			mine = append(mine, ns)
		}
	}
	_, statErr := os.Stat(labDir(prefix))
	if statErr == nil || slices.Contains(mine, nsName(prefix, NodeLAN)) || slices.Contains(mine, nsName(prefix, NodeHost)) {
		return fmt.Errorf("lab %q is already up; %s", prefix, downHint)
	}
	if len(mine) > 0 {
		return fmt.Errorf("namespaces %v already start with %q, and `kvmnet lab down --prefix %s` would delete them; pick another --prefix", mine, prefix+"-", prefix)
	}
	if err := os.MkdirAll(StateRoot, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", StateRoot, err)
	}
	if err := os.Mkdir(labDir(prefix), 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("lab %q is already up; %s", prefix, downHint)
		}
		return fmt.Errorf("creating lab directory: %w", err)
	}
	return nil
}

// warnConfig logs what in the config will not work in a lab as written.
func warnConfig(log *slog.Logger, cfg *model.Config) {
	if cfg == nil {
		return
	}
	labNets := []netip.Prefix{netip.MustParsePrefix(LANSubnet), netip.MustParsePrefix(InetSubnet)}
	for _, n := range cfg.Networks {
		if n.Mode == model.ModeBridged && n.Uplink != "" && n.Uplink != HostUplink {
			log.Warn("bridged network's uplink does not exist in the lab's host; use uplink "+HostUplink, "network", n.Name, "uplink", n.Uplink)
		}
		if n.Mode == model.ModeNAT && n.Egress != "" && n.Egress != HostUplink {
			log.Warn("NAT network's egress does not exist in the lab's host; use egress "+HostUplink+" or leave it out", "network", n.Name, "egress", n.Egress)
		}
		for _, p := range labNets {
			if n.Subnet.IsValid() && n.Subnet.Overlaps(p) {
				log.Warn("network's subnet overlaps one of the lab's own", "network", n.Name, "subnet", n.Subnet, "lab", p)
			}
		}
	}
}

// builder makes a lab, step by step, recording what it made in st.
type builder struct {
	prefix string
	cfg    *model.Config
	log    *slog.Logger
	st     state
}

func (b *builder) build(ctx context.Context) error {
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"creating namespaces", b.addNamespaces},
		{"building the router", b.buildRouter},
		{"building the internet host", b.buildInternet},
		{"building the KVM host", b.buildHost},
		{"building the VMs", b.buildVMs},
		{"writing resolv.conf files", b.writeResolvers},
		{"starting dnsmasq", b.startDNSMasq},
		{"recording state", func(context.Context) error { return writeState(b.st) }},
	}
	for _, s := range steps {
		if err := s.do(ctx); err != nil {
			return fmt.Errorf("building lab %q: %s: %w", b.prefix, s.what, err)
		}
	}
	return nil
}

// ip runs one `ip` command.
func (b *builder) ip(ctx context.Context, args ...string) error {
	_, err := run(ctx, "ip", args...)
	return err
}

// ips runs `ip` commands in order and stops at the first failure.
func (b *builder) ips(ctx context.Context, cmds ...[]string) error {
	for _, c := range cmds {
		if err := b.ip(ctx, c...); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) ns(node string) string { return nsName(b.prefix, node) }

func (b *builder) addNamespaces(ctx context.Context) error {
	nodes := []string{NodeLAN, NodeInet, NodeHost}
	if b.cfg != nil {
		for _, vm := range b.cfg.VMs {
			nodes = append(nodes, vm.Name)
		}
	}
	for _, node := range nodes {
		ns := b.ns(node)
		if err := b.ip(ctx, "netns", "add", ns); err != nil {
			return err
		}
		b.st.Namespaces = append(b.st.Namespaces, ns)
		if err := b.ip(ctx, "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
		// A new namespace copies IPv4 settings, forwarding included, from
		// the machine's (net.core.devconf_inherit_init_net=0, the
		// default). Set it for every node, so the lab behaves the same on
		// every machine: only the router forwards until kvmnet turns it on
		// in the host.
		forward := "0"
		if node == NodeLAN {
			forward = "1"
		}
		if _, err := run(ctx, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward="+forward); err != nil {
			return err
		}
	}
	b.log.Debug("namespaces created", "namespaces", b.st.Namespaces)
	return nil
}

// buildRouter makes the LAN: bridge lan0 with the router's address. The
// router forwards (see addNamespaces) between the LAN and the internet
// host, deliberately without NAT, so the internet host sees the LAN's (and,
// through kvmnet's masquerade, the host's) source addresses.
func (b *builder) buildRouter(ctx context.Context) error {
	lan := b.ns(NodeLAN)
	// The bridge's MAC is set: one nobody set is the lowest of its ports'
	// and changes as ports join (the bench adds its own), and every LAN
	// host's ARP entry for the router then points nowhere until renewed.
	return b.ips(ctx,
		[]string{"-n", lan, "link", "add", lanBridge, "address", routerMAC, "type", "bridge"},
		[]string{"-n", lan, "addr", "add", RouterLAN + prefixBits, "dev", lanBridge},
		[]string{"-n", lan, "link", "set", lanBridge, "up"},
	)
}

func (b *builder) buildInternet(ctx context.Context) error {
	lan, inet := b.ns(NodeLAN), b.ns(NodeInet)
	// Both ends are created right in their namespaces, so their names never
	// meet the machine's own links or another lab's.
	return b.ips(ctx,
		[]string{"link", "add", lanToInet, "netns", lan, "type", "veth", "peer", "name", inetNIC, "netns", inet},
		[]string{"-n", lan, "addr", "add", RouterInet + prefixBits, "dev", lanToInet},
		[]string{"-n", lan, "link", "set", lanToInet, "up"},
		[]string{"-n", inet, "addr", "add", Internet + prefixBits, "dev", inetNIC},
		[]string{"-n", inet, "link", "set", inetNIC, "up"},
		[]string{"-n", inet, "route", "add", "default", "via", RouterInet},
	)
}

// buildHost plugs the KVM host into the LAN. Forwarding stays off here
// (see addNamespaces): turning it on is kvmnet's job, and tests check that
// it does.
func (b *builder) buildHost(ctx context.Context) error {
	lan, host := b.ns(NodeLAN), b.ns(NodeHost)
	return b.ips(ctx,
		[]string{"link", "add", lanToHost, "netns", lan, "type", "veth", "peer", "name", HostUplink, "netns", host},
		[]string{"-n", lan, "link", "set", lanToHost, "master", lanBridge, "up"},
		[]string{"-n", host, "addr", "add", HostLAN + prefixBits, "dev", HostUplink},
		[]string{"-n", host, "link", "set", HostUplink, "up"},
		[]string{"-n", host, "route", "add", "default", "via", RouterLAN},
	)
}

// buildVMs gives each VM interface a veth: the host end, named as the tap,
// stays unattached in the host namespace for kvmnet to adopt, as it adopts
// the taps libvirt or qemu create; the guest end carries the VM's MAC.
func (b *builder) buildVMs(ctx context.Context) error {
	if b.cfg == nil {
		return nil
	}
	host := b.ns(NodeHost)
	for _, vm := range b.cfg.VMs {
		ns := b.ns(vm.Name)
		rec := VM{Name: vm.Name}
		for i, ifc := range vm.Interfaces {
			if ifc.CreateTap {
				rec.Skipped = append(rec.Skipped, ifc.Tap)
				b.log.Info("skipping interface with createTap: kvmnet creates its tap", "vm", vm.Name, "tap", ifc.Tap)
				continue
			}
			link := Link{Index: i, Network: ifc.Network, Tap: ifc.Tap, Iface: guestIface(i), MAC: strings.ToLower(ifc.HWAddr)}
			if err := b.ips(ctx,
				[]string{"link", "add", link.Tap, "netns", host, "type", "veth", "peer", "name", link.Iface, "netns", ns},
				[]string{"-n", ns, "link", "set", link.Iface, "address", link.MAC, "up"},
				[]string{"-n", host, "link", "set", link.Tap, "up"},
			); err != nil {
				return fmt.Errorf("VM %q interface %d: %w", vm.Name, i, err)
			}
			rec.Links = append(rec.Links, link)
		}
		b.st.VMs = append(b.st.VMs, rec)
	}
	return nil
}

// writeResolvers gives every namespace its own resolv.conf under
// /etc/netns, which `ip netns exec` and kvmnet's --netns bind over
// /etc/resolv.conf: the router, the internet host and the KVM host use the
// LAN's DNS; a VM has none until `lab dhcp` writes what its lease says. No
// lab process ever sees (or writes) the machine's own resolver.
func (b *builder) writeResolvers(context.Context) error {
	lanDNS := "# kvmnet lab " + b.prefix + ": the LAN's DNS (dnsmasq on the router)\nnameserver " + RouterLAN + "\n"
	vmDNS := "# kvmnet lab " + b.prefix + ": filled by `kvmnet lab dhcp` from the lease\n"
	for _, ns := range b.st.Namespaces {
		body := lanDNS
		if strings.HasPrefix(ns, b.prefix+"-vm-") {
			body = vmDNS
		}
		dir := filepath.Join(etcNetns, ns)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}
