// Package bench measures kvmnet with real traffic and real tools: the data
// paths of a KVM host (raw veth, routed, NAT, port forward, bridged) with
// iperf3 and a UDP request/response probe, the control plane (apply at
// scale, next to the same job done the recipe way, one command per object),
// and the DHCP server (perfdhcp, next to dnsmasq). Everything runs in
// network namespaces of a lab of its own, torn down afterwards.
package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvmnet/kvmnet/internal/lab"
	"github.com/kvmnet/kvmnet/internal/model"
)

// Ports the bench's servers listen on, in every namespace that has them.
const (
	iperfPort = 5201
	echoPort  = 7007
)

// Addresses of the bench's own namespaces, beside the lab's (see
// internal/lab): none overlaps the lab's LAN (172.30.0.0/24, whose DHCP
// pool is .100-.199) or internet (203.0.113.0/24).
const (
	// raw: two namespaces on one veth pair.
	rawA = "10.202.0.1"
	rawB = "10.202.0.2"
	// routed: a guest behind a namespace that routes without NAT.
	routedSubnet  = "10.201.0.0/24"
	routedGateway = "10.201.0.1"
	routedGuest   = "10.201.0.2"
	routedHostLAN = "172.30.0.3" // the routing namespace's address on the lab's LAN
	// linuxbr: a guest on the LAN through a plain bridge, with an
	// address outside the LAN's DHCP pool.
	linuxbrGuest = "172.30.0.4"
	// nat-recipe: a guest NATed by hand (iptables) behind a namespace
	// with its own address on the LAN.
	recipeSubnet  = "10.203.0.0/24"
	recipeGateway = "10.203.0.1"
	recipeGuest   = "10.203.0.2"
	recipeHostLAN = "172.30.0.5"
	// nat: the kvmnet network's subnet, and the guest's reserved address.
	natSubnet = "10.200.0.0/24"
	natGuest  = "10.200.0.10"
	// The kvmnet network and the lab's VMs.
	natNetwork     = "bench"
	bridgedNetwork = "lan"
	bridgedBridge  = "kv-lan"
	guestNAT       = "g1" // on the NAT network: nat and forward paths
	guestBridged   = "g2" // on the bridged network
)

// pathNS are the bench's own namespaces, named PREFIX-SUFFIX so that
// `kvmnet lab down --prefix PREFIX` removes them with the lab.
const (
	nsRawA      = "ra" // raw client
	nsRawB      = "rb" // raw server
	nsRoutedH   = "rh" // routing host
	nsRoutedG   = "rg" // routed guest
	nsLinuxBrH  = "bh" // plain bridging host
	nsLinuxBrG  = "bg" // its guest
	nsRecipeH   = "nh" // NAT by hand
	nsRecipeG   = "ng" // its guest
	rawVethName = "eth0"
)

// AllPaths are the paths the network bench knows, in bench order.
var AllPaths = []string{PathRaw, PathLinuxBr, PathBridged, PathRouted, PathNATRecipe, PathNAT, PathForward}

// pathDescriptions say what each path is; they go into the report.
var pathDescriptions = map[string]string{
	PathRaw:       "two namespaces on one veth pair: the physical limit of this machine",
	PathLinuxBr:   "guest on a plain Linux bridge whose port is the host's uplink on the LAN (no nftables; set up by the bench, not kvmnet) to the internet host, routed by the LAN router: bridged without kvmnet",
	PathBridged:   "guest on a kvmnet bridged network (the LAN's bridge) to the internet host, routed by the LAN router",
	PathRouted:    "guest behind a host namespace that routes its subnet (bridge, plain forwarding, no nftables, no NAT; set up by the bench, not kvmnet) to the internet host",
	PathNAT:       "guest on a kvmnet NAT network to the internet host, through kvmnet's ruleset and masquerade",
	PathNATRecipe: "guest behind a host namespace that NATs it by hand, the usual recipe (bridge, iptables MASQUERADE and FORWARD accept, no port security; set up by the bench, not kvmnet) to the internet host: nat without kvmnet",
	PathForward:   "internet host to the guest through a kvmnet port forward on the host's LAN address",
}

// NetOptions configure the network bench.
type NetOptions struct {
	// Kvmnet is the kvmnet binary that applies the bench's host file and
	// runs the daemon (normally the running binary).
	Kvmnet string
	// Prefix names the bench's lab.
	Prefix string
	// Rounds is the number of interleaved rounds (at least 1).
	Rounds int
	// Duration of each iperf3 run; whole seconds.
	Duration time.Duration
	// UDPRate is the offered UDP rate in bits/s.
	UDPRate float64
	// Ports is the number of extra interfaces (createTap) configured on the
	// NAT network.
	Ports int
	// Paths selects paths (nil: all of AllPaths).
	Paths []string
	// ProbeCount is the number of latency probes per path and round.
	ProbeCount int
	// MaxSpread is the min–max spread above which figures are flagged.
	MaxSpread float64
	// Progress receives progress; nil discards it.
	Progress *Progress
	// Log receives debug messages; nil discards them.
	Log *slog.Logger
}

// pathRun is a path ready to measure: a client namespace and a target.
type pathRun struct {
	name     string
	clientNS string
	serverNS string
	target   netip.Addr
}

// netBench is one run of the network bench.
type netBench struct {
	o        NetOptions
	lab      *lab.Lab
	stateDir string
	daemon   *daemonProc
	procs    []*daemonProc
	echoes   []*Echo
	report   *NetReport
	// forwards and bridged say whether kvmnet accepted them.
	forwards, bridged bool
	// portSecurity says whether kvmnet enforces port security (its
	// bridge-family table is in place).
	portSecurity bool
}

// want reports whether path is selected.
func (b *netBench) want(path string) bool { return slices.Contains(b.o.Paths, path) }

// ns is the full name of one of the bench's own namespaces.
func (b *netBench) ns(suffix string) string { return b.o.Prefix + "-" + suffix }

// RunNet runs the network bench: it builds a lab, sets up every selected
// path, measures them round by round, tears everything down (also when ctx
// is canceled) and returns the report.
func RunNet(ctx context.Context, o NetOptions) (rep *NetReport, err error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	if o.Progress == nil {
		o.Progress = NewProgress(nil)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	b := &netBench{o: o, report: &NetReport{
		Started: time.Now().UTC().Truncate(time.Second),
		Settings: NetSettings{Rounds: o.Rounds, Duration: o.Duration.String(), UDPRate: o.UDPRate,
			Ports: o.Ports, ProbeCount: o.ProbeCount, Prefix: o.Prefix},
		Env: environment(ctx),
	}}
	defer func() {
		if terr := b.teardown(); terr != nil {
			err = errors.Join(err, terr)
		}
	}()
	if err := b.setup(ctx); err != nil {
		return nil, err
	}
	runs, err := b.paths(ctx)
	if err != nil {
		return nil, err
	}
	if err := b.rounds(ctx, runs); err != nil {
		return nil, err
	}
	b.report.Finish(o.MaxSpread)
	return b.report, nil
}

// check validates the options and fills defaults.
func (o *NetOptions) check() error {
	if o.Kvmnet == "" {
		return errors.New("bench: no kvmnet binary given")
	}
	if err := lab.ValidatePrefix(o.Prefix); err != nil {
		return err
	}
	if o.Rounds < 1 {
		return fmt.Errorf("--rounds %d: want at least 1 (3 or more to judge the spread)", o.Rounds)
	}
	if o.Duration < time.Second || o.Duration%time.Second != 0 {
		return fmt.Errorf("--duration %s: want whole seconds, at least 1s (iperf3 -t takes seconds)", o.Duration)
	}
	if o.UDPRate <= 0 {
		return fmt.Errorf("--udp-rate: want a positive rate, e.g. 500M")
	}
	if o.Ports < 0 || o.Ports > 10000 {
		return fmt.Errorf("--ports %d: want 0 to 10000", o.Ports)
	}
	if len(o.Paths) == 0 {
		o.Paths = AllPaths
	}
	for _, p := range o.Paths {
		if !slices.Contains(AllPaths, p) {
			return fmt.Errorf("--paths: unknown path %q (want some of %s)", p, strings.Join(AllPaths, ", "))
		}
	}
	if o.ProbeCount <= 0 {
		o.ProbeCount = 2000
	}
	if os.Geteuid() != 0 {
		return errors.New("bench: needs root, to create network namespaces (try sudo)")
	}
	for _, tool := range []string{"ip", "iperf3", "udhcpc", "dnsmasq", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("bench: %s is missing (on Debian: apt-get install iproute2 iperf3 udhcpc dnsmasq-base nftables)", tool)
		}
	}
	if slices.Contains(o.Paths, PathNATRecipe) {
		if _, err := exec.LookPath("iptables"); err != nil {
			return fmt.Errorf("bench: iptables is missing, which the %s path NATs with (on Debian: apt-get install iptables; or leave the path out with --paths)", PathNATRecipe)
		}
	}
	return nil
}

// environment describes the machine.
func environment(ctx context.Context) Env {
	e := Env{CPUs: runtime.NumCPU(), BrNetfilter: "absent"}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		e.Kernel = "Linux " + unix.ByteSliceToString(u.Release[:])
	}
	if out, err := run(ctx, "iperf3", "--version"); err == nil {
		e.Iperf3, _, _ = strings.Cut(strings.TrimSpace(out), " (")
	}
	if b, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		e.BrNetfilter = strings.TrimSpace(string(b))
	}
	return e
}

// setup brings the lab up and configures kvmnet in its host.
func (b *netBench) setup(ctx context.Context) error {
	p := b.o.Progress
	p.Logf("building lab %q", b.o.Prefix)
	cfg, err := model.Parse("lab.yaml", []byte(b.labConfig()))
	if err != nil {
		return fmt.Errorf("bench: the lab's config: %w", err)
	}
	l, err := lab.Up(ctx, lab.Options{Prefix: b.o.Prefix, Config: cfg, Log: b.o.Log})
	if err != nil {
		// Up tears down what it made; a prefix in use is not ours to touch.
		return err
	}
	b.lab = l
	if b.stateDir, err = os.MkdirTemp("", "kvmnet-bench-"); err != nil {
		return err
	}
	if !b.want(PathNAT) && !b.want(PathForward) && !b.want(PathBridged) {
		return nil
	}
	return b.setupKvmnet(ctx)
}

// labConfig gives the lab its VMs: the guest of the NAT network and, when
// the bridged path is wanted, the guest of the bridged network. The extra
// ports are kvmnet's taps (createTap) and need no namespaces.
func (b *netBench) labConfig() string {
	return benchConfig{Bridged: b.want(PathBridged)}.YAML()
}

// kvmnet runs the kvmnet binary on the lab's host with the bench's state.
func (b *netBench) kvmnet(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--netns", b.lab.NS(lab.NodeHost), "--state-dir", b.stateDir}, args...)
	return run(ctx, b.o.Kvmnet, full...)
}

// setupKvmnet finds out what this kvmnet can apply (forwards and bridged
// networks come later than NAT), applies the bench's host file, starts the
// daemon and gives the guests their leases.
func (b *netBench) setupKvmnet(ctx context.Context) error {
	p := b.o.Progress
	if b.want(PathForward) {
		b.forwards, _ = b.capable(ctx, PathForward, benchConfig{Forwards: true})
	}
	if b.want(PathBridged) {
		b.bridged, _ = b.capable(ctx, PathBridged, benchConfig{Bridged: true})
	}
	c := benchConfig{Ports: b.o.Ports, Forwards: b.forwards, Bridged: b.bridged}
	file := filepath.Join(b.stateDir, "host.yaml")
	if err := os.WriteFile(file, []byte(c.YAML()), 0o644); err != nil {
		return err
	}
	p.Logf("applying the bench's host file (%d extra port(s)) with kvmnet", b.o.Ports)
	if _, err := b.kvmnet(ctx, "apply", "-f", file); err != nil {
		return fmt.Errorf("bench: applying the host file: %w", err)
	}
	// Port security lives in a table of the bridge family; a kvmnet
	// that accepts spoofguard but does not enforce it has none.
	if out, err := inNS(ctx, b.lab.NS(lab.NodeHost), "nft", "list", "tables"); err == nil {
		b.portSecurity = strings.Contains(out, "table bridge kvmnet")
	}
	if err := b.startDaemon(ctx); err != nil {
		return err
	}
	if _, err := b.lab.DHCP(ctx, guestNAT, "eth0"); err != nil {
		return fmt.Errorf("bench: lease for the NAT guest: %w", err)
	}
	if b.bridged {
		if _, err := b.lab.DHCP(ctx, guestBridged, "eth0"); err != nil {
			b.skip(PathBridged, fmt.Sprintf("the bridged guest got no lease from the LAN: %v", err))
			b.bridged = false
		}
	}
	return nil
}

// capable asks kvmnet to plan a host file with a feature; if it refuses,
// the path is skipped with kvmnet's reason.
func (b *netBench) capable(ctx context.Context, path string, c benchConfig) (bool, error) {
	file := filepath.Join(b.stateDir, "probe-"+path+".yaml")
	if err := os.WriteFile(file, []byte(c.YAML()), 0o644); err != nil {
		return false, err
	}
	_, err := b.kvmnet(ctx, "plan", "-f", file)
	if err == nil {
		return true, nil
	}
	msg := kvmnetReason(err.Error())
	reason := "kvmnet refused the host file: " + msg
	if strings.Contains(msg, "cannot be applied by this version") {
		feature := map[string]string{PathForward: "port forwards", PathBridged: "bridged networks"}[path]
		reason = fmt.Sprintf("this kvmnet does not apply %s yet (kvmnet plan: %s)", feature, msg)
	}
	b.skip(path, reason)
	return false, nil
}

// filePos is the "FILE:LINE:COLUMN: " kvmnet starts its errors with.
var filePos = regexp.MustCompile(`^\S+:\d+:\d+: `)

// kvmnetReason extracts kvmnet's own message from the error of a failed
// kvmnet run: its first line, without "kvmnet: " and the position in the
// bench's temporary file.
func kvmnetReason(msg string) string {
	if i := strings.Index(msg, "kvmnet: "); i >= 0 {
		msg = msg[i+len("kvmnet: "):]
	}
	return filePos.ReplaceAllString(firstLine(msg), "")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// skip records that path is not measured, and why.
func (b *netBench) skip(path, reason string) {
	b.report.Skipped = append(b.report.Skipped, Skip{Path: path, Reason: reason})
	b.o.Progress.Logf("skipping %s: %s", path, reason)
}

// startDaemon starts `kvmnet daemon` on the lab's host and waits until it
// serves DHCP.
func (b *netBench) startDaemon(ctx context.Context) error {
	d, err := startDaemon(ctx, b.o.Kvmnet, b.lab.NS(lab.NodeHost), b.stateDir)
	if err != nil {
		return err
	}
	b.daemon = d
	return nil
}

// paths sets up every selected path and checks it carries traffic. Raw,
// routed and nat must work; forward and bridged are skipped with a note
// when this kvmnet cannot apply them or they do not answer.
func (b *netBench) paths(ctx context.Context) ([]*pathRun, error) {
	var runs []*pathRun
	for _, name := range AllPaths {
		if !b.want(name) {
			continue
		}
		var pr *pathRun
		var err error
		switch name {
		case PathRaw:
			pr, err = b.setupRaw(ctx)
		case PathRouted:
			pr, err = b.setupRouted(ctx)
		case PathLinuxBr:
			pr, err = b.setupLinuxBr(ctx)
		case PathNATRecipe:
			pr, err = b.setupNATRecipe(ctx)
		case PathNAT:
			pr = &pathRun{name: name, clientNS: b.lab.NS(guestNAT), serverNS: b.lab.NS(lab.NodeInet), target: netip.MustParseAddr(lab.Internet)}
		case PathForward:
			if !b.forwards {
				continue
			}
			pr = &pathRun{name: name, clientNS: b.lab.NS(lab.NodeInet), serverNS: b.lab.NS(guestNAT), target: netip.MustParseAddr(lab.HostLAN)}
		case PathBridged:
			if !b.bridged {
				continue
			}
			pr = &pathRun{name: name, clientNS: b.lab.NS(guestBridged), serverNS: b.lab.NS(lab.NodeInet), target: netip.MustParseAddr(lab.Internet)}
		}
		if err != nil {
			return nil, fmt.Errorf("bench: setting up path %s: %w", name, err)
		}
		if err := b.startServers(ctx, pr.serverNS); err != nil {
			return nil, err
		}
		if _, err := Probe(ctx, pr.clientNS, netip.AddrPortFrom(pr.target, echoPort), ProbeOptions{Count: 5, Timeout: time.Second}); err != nil {
			if name == PathForward || name == PathBridged {
				b.skip(name, fmt.Sprintf("no traffic gets through: %v", err))
				continue
			}
			return nil, fmt.Errorf("bench: path %s carries no traffic: %w", name, err)
		}
		// iperf3 runs over TCP (its control connection even for UDP),
		// and gives a connection 3 s: a path must carry TCP before it
		// is measured. A path that needed more than one attempt says so
		// in the report.
		tries, took, err := WaitTCP(ctx, pr.clientNS, netip.AddrPortFrom(pr.target, echoPort), 30*time.Second)
		if err != nil {
			if name == PathForward || name == PathBridged {
				b.skip(name, fmt.Sprintf("no TCP gets through: %v", err))
				continue
			}
			return nil, fmt.Errorf("bench: path %s carries no TCP: %w", name, err)
		}
		if tries > 1 {
			b.report.Warnings = append(b.report.Warnings, fmt.Sprintf("%s: TCP got through only after %d attempts, %s after the UDP probe did", name, tries, took.Round(time.Millisecond)))
		}
		runs = append(runs, pr)
		b.report.Paths = append(b.report.Paths, PathResult{Name: name, Description: pathDescriptions[name]})
	}
	b.report.Notes = b.notes()
	return runs, nil
}

// setupRaw builds two namespaces on one veth pair.
func (b *netBench) setupRaw(ctx context.Context) (*pathRun, error) {
	a, z := b.ns(nsRawA), b.ns(nsRawB)
	if err := ipCmds(ctx,
		[]string{"netns", "add", a},
		[]string{"netns", "add", z},
		[]string{"-n", a, "link", "set", "lo", "up"},
		[]string{"-n", z, "link", "set", "lo", "up"},
		// Both ends are created in their namespaces: no name ever
		// appears in the machine's own.
		[]string{"link", "add", rawVethName, "netns", a, "type", "veth", "peer", "name", rawVethName, "netns", z},
		[]string{"-n", a, "addr", "add", rawA + "/24", "dev", rawVethName},
		[]string{"-n", z, "addr", "add", rawB + "/24", "dev", rawVethName},
		[]string{"-n", a, "link", "set", rawVethName, "up"},
		[]string{"-n", z, "link", "set", rawVethName, "up"},
	); err != nil {
		return nil, err
	}
	return &pathRun{name: PathRaw, clientNS: a, serverNS: z, target: netip.MustParseAddr(rawB)}, nil
}

// setupRouted builds a host that routes a guest subnet without NAT: a
// namespace on the lab's LAN with a bridge for its guest (as kvmnet's
// networks have) and forwarding on, no nftables at all; the LAN router
// routes the guest subnet back to it. kvmnet plays no part.
func (b *netBench) setupRouted(ctx context.Context) (*pathRun, error) {
	h, g, lan := b.ns(nsRoutedH), b.ns(nsRoutedG), b.lab.NS(lab.NodeLAN)
	if err := ipCmds(ctx,
		[]string{"netns", "add", h},
		[]string{"netns", "add", g},
		[]string{"-n", h, "link", "set", "lo", "up"},
		[]string{"-n", g, "link", "set", "lo", "up"},
		// The host's uplink, a port of the LAN's bridge like the lab's
		// KVM host's.
		[]string{"link", "add", "rh0", "netns", lan, "type", "veth", "peer", "name", "eth0", "netns", h},
		[]string{"-n", lan, "link", "set", "rh0", "master", "lan0", "up"},
		[]string{"-n", h, "addr", "add", routedHostLAN + "/24", "dev", "eth0"},
		[]string{"-n", h, "link", "set", "eth0", "up"},
		[]string{"-n", h, "route", "add", "default", "via", lab.RouterLAN},
		// The guest's network: a bridge with the gateway address, and
		// the guest's veth as its port.
		[]string{"-n", h, "link", "add", "br0", "type", "bridge"},
		[]string{"-n", h, "addr", "add", routedGateway + "/24", "dev", "br0"},
		[]string{"-n", h, "link", "set", "br0", "up"},
		[]string{"link", "add", "g0", "netns", h, "type", "veth", "peer", "name", "eth0", "netns", g},
		[]string{"-n", h, "link", "set", "g0", "master", "br0", "up"},
		[]string{"-n", g, "addr", "add", routedGuest + "/24", "dev", "eth0"},
		[]string{"-n", g, "link", "set", "eth0", "up"},
		[]string{"-n", g, "route", "add", "default", "via", routedGateway},
		// The way back: the LAN router sends the guest subnet to the host.
		[]string{"-n", lan, "route", "add", routedSubnet, "via", routedHostLAN},
	); err != nil {
		return nil, err
	}
	if _, err := inNS(ctx, h, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return nil, err
	}
	return &pathRun{name: PathRouted, clientNS: g, serverNS: b.lab.NS(lab.NodeInet), target: netip.MustParseAddr(lab.Internet)}, nil
}

// setupLinuxBr builds the bridged path without kvmnet: a host namespace
// whose uplink (a port of the LAN's bridge, as the lab host's is) and
// guest veth are ports of one plain bridge, and a guest with a static LAN
// address. Its frames cross the same two bridges and the LAN router as a
// kvmnet bridged guest's, so the two compare like for like.
func (b *netBench) setupLinuxBr(ctx context.Context) (*pathRun, error) {
	h, g, lan := b.ns(nsLinuxBrH), b.ns(nsLinuxBrG), b.lab.NS(lab.NodeLAN)
	if err := ipCmds(ctx,
		[]string{"netns", "add", h},
		[]string{"netns", "add", g},
		[]string{"-n", h, "link", "set", "lo", "up"},
		[]string{"-n", g, "link", "set", "lo", "up"},
		[]string{"link", "add", "bh0", "netns", lan, "type", "veth", "peer", "name", "eth0", "netns", h},
		[]string{"-n", lan, "link", "set", "bh0", "master", "lan0", "up"},
		[]string{"-n", h, "link", "add", "br0", "type", "bridge"},
		[]string{"-n", h, "link", "set", "br0", "up"},
		[]string{"-n", h, "link", "set", "eth0", "master", "br0", "up"},
		[]string{"link", "add", "g0", "netns", h, "type", "veth", "peer", "name", "eth0", "netns", g},
		[]string{"-n", h, "link", "set", "g0", "master", "br0", "up"},
		[]string{"-n", g, "addr", "add", linuxbrGuest + "/24", "dev", "eth0"},
		[]string{"-n", g, "link", "set", "eth0", "up"},
		[]string{"-n", g, "route", "add", "default", "via", lab.RouterLAN},
	); err != nil {
		return nil, err
	}
	return &pathRun{name: PathLinuxBr, clientNS: g, serverNS: b.lab.NS(lab.NodeInet), target: netip.MustParseAddr(lab.Internet)}, nil
}

// setupNATRecipe builds NAT the way a host is set up by hand: a host
// namespace on the LAN with a bridge for its guest, ip_forward on, and
// the recipe's iptables rules (MASQUERADE of the guest subnet, FORWARD
// accept out of the bridge and back for established connections); no
// port security. Its frames cross the same hops as a kvmnet NAT guest's.
func (b *netBench) setupNATRecipe(ctx context.Context) (*pathRun, error) {
	h, g, lan := b.ns(nsRecipeH), b.ns(nsRecipeG), b.lab.NS(lab.NodeLAN)
	if err := ipCmds(ctx,
		[]string{"netns", "add", h},
		[]string{"netns", "add", g},
		[]string{"-n", h, "link", "set", "lo", "up"},
		[]string{"-n", g, "link", "set", "lo", "up"},
		[]string{"link", "add", "nh0", "netns", lan, "type", "veth", "peer", "name", "eth0", "netns", h},
		[]string{"-n", lan, "link", "set", "nh0", "master", "lan0", "up"},
		[]string{"-n", h, "addr", "add", recipeHostLAN + "/24", "dev", "eth0"},
		[]string{"-n", h, "link", "set", "eth0", "up"},
		[]string{"-n", h, "route", "add", "default", "via", lab.RouterLAN},
		// The gateway's MAC is set, or it would follow its ports' (see
		// kvmnet's plan.BridgeMAC).
		[]string{"-n", h, "link", "add", "br0", "address", "02:00:0a:cb:00:01", "type", "bridge"},
		[]string{"-n", h, "addr", "add", recipeGateway + "/24", "dev", "br0"},
		[]string{"-n", h, "link", "set", "br0", "up"},
		[]string{"link", "add", "g0", "netns", h, "type", "veth", "peer", "name", "eth0", "netns", g},
		[]string{"-n", h, "link", "set", "g0", "master", "br0", "up"},
		[]string{"-n", g, "addr", "add", recipeGuest + "/24", "dev", "eth0"},
		[]string{"-n", g, "link", "set", "eth0", "up"},
		[]string{"-n", g, "route", "add", "default", "via", recipeGateway},
	); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"iptables", "-t", "nat", "-A", "POSTROUTING", "-s", recipeSubnet, "!", "-d", recipeSubnet, "-j", "MASQUERADE"},
		{"iptables", "-A", "FORWARD", "-i", "br0", "-j", "ACCEPT"},
		{"iptables", "-A", "FORWARD", "-o", "br0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
	} {
		if _, err := inNS(ctx, h, args...); err != nil {
			return nil, err
		}
	}
	return &pathRun{name: PathNATRecipe, clientNS: g, serverNS: b.lab.NS(lab.NodeInet), target: netip.MustParseAddr(lab.Internet)}, nil
}

// startServers starts an iperf3 server and an echo server in ns, once.
func (b *netBench) startServers(ctx context.Context, ns string) error {
	for _, p := range b.procs {
		if p.what == "iperf3 server in "+ns {
			return nil
		}
	}
	// --forceflush is not needed: readiness is read from /proc, not from
	// iperf3's (buffered) output.
	cmd := exec.Command("ip", "netns", "exec", ns, "iperf3", "--server", "--port", strconv.Itoa(iperfPort))
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	d, err := startProc("iperf3 server in "+ns, cmd)
	if err != nil {
		return err
	}
	b.procs = append(b.procs, d)
	// ip execs iperf3, so the pid is iperf3's and /proc/PID/net is ns's.
	err = lab.Poll(ctx, "iperf3 to listen in "+ns, 10*time.Second, 10*time.Millisecond, func() error {
		if d.exited() {
			return fmt.Errorf("iperf3 server in %s exited: %v", ns, d.err)
		}
		ok, err := listening(d.cmd.Process.Pid, "tcp", iperfPort)
		if err != nil || !ok {
			return lab.ErrNotYet
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	e, err := StartEcho(ns, echoPort)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	b.echoes = append(b.echoes, e)
	return nil
}

// notes say what the figures include and what they do not.
func (b *netBench) notes() []string {
	n := []string{
		"CPU is the sys+softirq share of the whole machine read from /proc/stat, which is not per namespace: it includes the iperf3 client and server, the forwarding in every namespace on the path, and anything else running",
		"a VM's tap is a veth in the lab (its other end, in a namespace, plays the guest); qemu, virtio and vhost are not on the path",
		"raw, linuxbr, routed and nat-recipe are set up by the bench with ip commands (and iptables for nat-recipe) in its own namespaces; kvmnet plays no part in them",
	}
	if b.want(PathNAT) || b.want(PathForward) || b.want(PathBridged) {
		n = append(n,
			fmt.Sprintf("kvmnet's full configuration is in place on the NAT network: the guest's interface with spoofguard on, and %d extra interface(s) with kvmnet-created taps", b.o.Ports),
			"the kvmnet daemon (DHCP, DNS, reconcile) runs during the measurements",
		)
		b.report.PortSecurity = "not enforced"
		if b.portSecurity {
			b.report.PortSecurity = "enforced"
			n = append(n, "port security (spoofguard) is enforced: kvmnet's bridge table (table bridge kvmnet) checks every frame of every port, so the figures include its cost")
		} else {
			n = append(n, "port security (spoofguard) is configured but not enforced by this version of kvmnet (it made no bridge table): the figures do not include its cost")
		}
	}
	if b.report.Env.BrNetfilter == "1" {
		n = append(n, "br_netfilter is active (net.bridge.bridge-nf-call-iptables=1): in namespaces with nftables rules, bridged frames also cross netfilter hooks")
	}
	return n
}

// rounds measures every path once per round, interleaved (A B C A B C),
// so a slow drift of the machine touches every path alike.
func (b *netBench) rounds(ctx context.Context, runs []*pathRun) error {
	p := b.o.Progress
	p.Start(b.o.Rounds * len(runs) * 4)
	defer p.Done()
	for round := 1; round <= b.o.Rounds; round++ {
		for i, pr := range runs {
			res := &b.report.Paths[i]
			if err := b.measure(ctx, pr, res, round); err != nil {
				return err
			}
		}
	}
	return nil
}

// measure runs the four measurements of one path in one round. A failed
// measurement is a warning and leaves its sample out; only cancellation
// stops the bench.
func (b *netBench) measure(ctx context.Context, pr *pathRun, res *PathResult, round int) error {
	p := b.o.Progress
	step := func(what string) { p.Step(fmt.Sprintf("round %d/%d  %-7s  %s", round, b.o.Rounds, pr.name, what)) }
	fail := func(what string, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.report.Warnings = append(b.report.Warnings, fmt.Sprintf("round %d, %s, %s: %v", round, pr.name, what, err))
		return nil
	}

	step("TCP, 1 stream")
	r, cpu, err := b.iperf(ctx, pr)
	if err != nil {
		if err := fail("TCP 1 stream", err); err != nil {
			return err
		}
	} else {
		res.Add(MetricTCP1, r.BitsPerSecond)
		res.Add(MetricCPUTCP, cpu)
		res.Add(MetricCPUSend, r.CPUSender)
		res.Add(MetricCPURecv, r.CPUReceiver)
	}

	step("TCP, 4 streams")
	if r, _, err = b.iperf(ctx, pr, "--parallel", "4"); err != nil {
		if err := fail("TCP 4 streams", err); err != nil {
			return err
		}
	} else {
		res.Add(MetricTCP4, r.BitsPerSecond)
	}

	step("UDP at " + FormatRate(b.o.UDPRate))
	if r, cpu, err = b.iperf(ctx, pr, "--udp", "--bitrate", strconv.FormatFloat(b.o.UDPRate, 'f', 0, 64)); err != nil {
		if err := fail("UDP", err); err != nil {
			return err
		}
	} else {
		res.Add(MetricUDP, r.BitsPerSecond)
		res.Add(MetricUDPLoss, r.LostPercent)
		res.Add(MetricUDPJitter, r.JitterMs)
		res.Add(MetricCPU, cpu)
	}

	step("latency")
	lat, err := Probe(ctx, pr.clientNS, netip.AddrPortFrom(pr.target, echoPort), ProbeOptions{Count: b.o.ProbeCount, Warmup: 100})
	if err != nil {
		return fail("latency", err)
	}
	res.Add(MetricLatP50, lat.P50)
	res.Add(MetricLatP99, lat.P99)
	if lat.Lost > 0 {
		b.report.Warnings = append(b.report.Warnings, fmt.Sprintf("round %d, %s, latency: %d of %d probes lost", round, pr.name, lat.Lost, lat.Sent))
	}
	return nil
}

// iperf runs one iperf3 client on the path and returns its result and the
// machine's sys+softirq share over the run. A server still busy with the
// previous test is asked again.
func (b *netBench) iperf(ctx context.Context, pr *pathRun, extra ...string) (IperfResult, float64, error) {
	secs := int(b.o.Duration / time.Second)
	args := append([]string{"netns", "exec", pr.clientNS, "iperf3", "--client", pr.target.String(),
		"--port", strconv.Itoa(iperfPort), "--time", strconv.Itoa(secs), "--json", "--connect-timeout", "3000"}, extra...)
	var res IperfResult
	var share float64
	// An iperf3 server runs one test at a time and answers "busy" until
	// the previous client's test has ended on its side; on a loaded
	// machine that can take a while, so a busy server is waited for up
	// to 30 s (it was 10 s; why one path lost all its figures once in a
	// short bench on a loaded machine is not known).
	err := lab.Poll(ctx, "iperf3 server on "+pr.name, 30*time.Second, 100*time.Millisecond, func() error {
		runCtx, cancel := context.WithTimeout(ctx, b.o.Duration+30*time.Second)
		defer cancel()
		before, cerr := ReadCPU()
		// iperf3 --json reports failures in its JSON and exits 1: the
		// output is read whatever the exit status.
		out, runErr := run(runCtx, "ip", args...)
		after, cerr2 := ReadCPU()
		r, err := ParseIperf([]byte(out))
		switch {
		case errors.Is(err, ErrIperfBusy):
			return fmt.Errorf("%w: %v", lab.ErrNotYet, err)
		case err != nil && runErr != nil:
			return fmt.Errorf("%w (%v)", err, runErr)
		case err != nil:
			return err
		}
		res = r
		share = nan
		if cerr == nil && cerr2 == nil {
			share = SysSoftIRQShare(before, after)
		}
		return nil
	})
	return res, share, err
}

// teardown stops what the bench started and takes the lab down. It keeps
// going after errors and returns them all.
func (b *netBench) teardown() error {
	for _, e := range b.echoes {
		e.Close()
	}
	for _, p := range b.procs {
		p.stop(3 * time.Second)
	}
	if b.daemon != nil {
		b.daemon.stop(5 * time.Second)
	}
	// Down deletes every namespace named PREFIX-*, the bench's own (raw,
	// routed) included, and stops what still runs in them.
	return tearDown(b.lab, b.o.Progress, b.o.Prefix, b.stateDir)
}
