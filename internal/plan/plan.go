// Package plan compares the desired state (a model.Config) with what the
// kernel holds (Observed) and returns an ordered, printable list of actions.
// It is pure: no kernel access, runs on any OS. Apply the same config twice
// and the second plan is empty.
package plan

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/kvmnet/kvmnet/internal/backend"
)

// Ownership marks. Every link kvmnet creates carries one of these as its
// alias (IFLA_IFALIAS), so destroy and garbage collection never touch
// anything that is not kvmnet's.
const (
	AliasPrefix    = "kvmnet:"
	bridgeAliasTag = "kvmnet:network="
	tapAliasTag    = "kvmnet:tap="
)

// BridgeAlias is the alias of the bridge of network name.
func BridgeAlias(network string) string { return bridgeAliasTag + network }

// TapAlias is the alias of a tap kvmnet created for VM vm.
func TapAlias(vm string) string { return tapAliasTag + vm }

// IsOwnedBridge reports whether l is a bridge kvmnet created.
func IsOwnedBridge(l Link) bool { return strings.HasPrefix(l.Alias, bridgeAliasTag) }

// IsOwnedTap reports whether l is a tap kvmnet created.
func IsOwnedTap(l Link) bool { return strings.HasPrefix(l.Alias, tapAliasTag) }

// BridgeNFSysctls are br_netfilter's global switches: when one is 1,
// every bridge's traffic goes through that table family, whatever the
// bridge's own nf_call_* says. They exist once br_netfilter is loaded;
// kvmnet reports them and never changes them (other tools may need them).
var BridgeNFSysctls = []string{"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables", "net.bridge.bridge-nf-call-arptables"}

// Sysctl keys kvmnet may change.
const (
	SysctlIPForward = "net.ipv4.ip_forward"
)

// Link is the planner's view of a network device.
type Link struct {
	Name   string
	Kind   string
	Alias  string
	Master string
	MTU    int
	Up     bool
	HWAddr string
	Addrs  []netip.Prefix
	// Isolated is the bridge port flag (only read for ports of kvmnet's
	// bridges).
	Isolated bool
	// BridgeNF is "on" when a kvmnet bridge sends its traffic through
	// iptables (nf_call_iptables, ip6tables or arptables set), "off" when
	// it does not, "" when unknown (not read, or a kernel without bridge
	// netfilter).
	BridgeNF string
	// Ports, on the Gone link of a bridge's del-link, are the links that
	// were its ports: deleting a bridge frees them, so undoing the
	// deletion must enslave again those still there.
	Ports []Link
	// VLANFiltering is a bridge's vlan_filtering.
	VLANFiltering bool
	// VLANs are a bridge port's VLANs (`bridge vlan show`), or, on a
	// bridge, its own (`bridge vlan show dev BR self`).
	VLANs []VLAN
	// VLANParent and VLANID are those of an 802.1Q link (kind "vlan").
	VLANParent string
	VLANID     int
	// HTB is kvmnet's shaping of the link's egress (traffic to the guest
	// on a tap), nil when the link's root qdisc is not kvmnet's htb.
	HTB *HTB
}

// ObserveOptions say what an observation needs beyond the links, tables
// and sysctls every plan reads.
type ObserveOptions struct {
	// Hosts asks for Observed.Hosts: every address of every family and the
	// routes of every table, which only bridged networks (and giving an
	// uplink back) need. A host with a full routing table pays for that
	// dump on every reconcile otherwise.
	Hosts bool
	// Sysctls are sysctls to read beyond those every plan reads, when
	// they exist (see ConntrackSysctls), with whether they can be written
	// where kvmnet runs (Observed.ReadOnly).
	Sysctls []string
	// Memory asks for Observed.MemTotal (conntrack max: auto).
	Memory bool
	// Features are the kernel features to check (see Observed.Missing):
	// only those a configuration needs (NeededFeatures), each checked once
	// per process.
	Features []Feature
}

// Feature is a kernel capability that some keys of a file need and that
// not every kernel has.
type Feature string

// The features kvmnet checks before planning what needs them.
const (
	FeatureBridgeVLAN Feature = "bridge VLAN filtering"
	FeatureVLAN       Feature = "802.1Q VLAN interfaces"
	FeatureFlowtable  Feature = "nftables flowtables"
	// FeatureFqCodel is the fq_codel qdisc, the fair leaf under a port's
	// htb class where the kernel has it.
	FeatureFqCodel Feature = "the fq_codel qdisc"
	// FeatureMirred is tc's mirred action, which redirects what a guest
	// sends to an ifb device to be shaped there.
	FeatureMirred Feature = "the tc mirred action"
)

// Observed is a fresh observation of the kernel.
type Observed struct {
	Links            map[string]Link
	DefaultRouteLink string
	Table            TableState
	// Bridge is kvmnet's bridge-family table (port security).
	Bridge  TableState
	Sysctls map[string]string
	// ReadOnly marks the sysctls of ObserveOptions.Sysctls that exist but
	// cannot be written where kvmnet runs: the kernel makes some global
	// to the machine, writable only from its initial network namespace.
	ReadOnly map[string]bool
	// MemTotal is the host's memory in bytes (when asked for).
	MemTotal uint64
	// Listeners are the host's listening TCP and bound UDP sockets.
	Listeners []Listener
	// Hosts is the layer-3 configuration of every link that has addresses
	// or routes of its own, by link name: what an uplink conversion moves.
	Hosts map[string]HostConfig
	// Missing says, for each feature asked for that the kernel lacks, what
	// the kernel refused.
	Missing map[Feature]string
}

// Listener is a socket of the host that waits for connections.
type Listener struct {
	Proto   string // tcp or udp
	Addr    netip.Addr
	Port    uint16
	Process string // "sshd (pid 412)", or "" when unknown
}

// Names returns the link names, sorted, for messages.
func (o *Observed) Names() []string {
	n := make([]string, 0, len(o.Links))
	for k := range o.Links {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Op is the kind of an action.
type Op string

// The actions a plan is made of; each maps to one backend call.
const (
	OpAddBridge Op = "add-bridge"
	OpAddTap    Op = "add-tap"
	OpSetMTU    Op = "set-mtu"
	OpSetAlias  Op = "set-alias"
	OpSetHWAddr Op = "set-hwaddr"
	OpSetUp     Op = "set-up"
	OpSetMaster Op = "set-master"
	OpAddAddr   Op = "add-addr"
	OpDelAddr   Op = "del-addr"
	OpNft       Op = "nft"
	OpSysctl    Op = "sysctl"
	OpDelLink   Op = "del-link"
	OpCtDelete  Op = "conntrack-delete"
	OpIsolate   Op = "set-isolated"
	// OpConvert makes an uplink the port of a bridge and moves the host's
	// addresses and routes from it to the bridge; OpRelease is its inverse.
	OpConvert Op = "bridge-uplink"
	OpRelease Op = "release-uplink"
	// OpBridgeNF turns a bridge's own nf_call_iptables, ip6tables and
	// arptables off.
	OpBridgeNF Op = "set-bridge-nf"
	// OpSetHTB shapes a link's egress with kvmnet's htb; OpDelHTB takes
	// it away.
	OpSetHTB Op = "set-htb"
	OpDelHTB Op = "del-htb"
)

// Flow names the connections of one revoked forward: original destination
// address, protocol and port.
type Flow struct {
	Proto string
	Addr  netip.Addr
	Port  uint16
}

// TapSpec describes a tap kvmnet creates.
type TapSpec struct {
	Queues int
	Owner  string
}

// Action is one step of a plan, typed by what it does (the step types
// are in steps.go and steps_link.go). Each kind carries what it needs,
// prints itself as the command that does the same by hand, and does
// itself on a Kernel, returning its inverse: a new concern adds its step
// types and its planner, not a case in a switch.
type Action interface {
	// Op names the kind, for summaries, logs and metrics.
	Op() Op
	// Link is the link the step is about, "" for none.
	Link() string
	// String is the command that would do the same by hand.
	String() string
	// Do runs the step on k and returns what undoes it; nil when nothing
	// can (a cut connection stays cut).
	Do(ctx context.Context, k Kernel, h Hooks) (Undo, error)
}

// Plan is an ordered list of actions, plus what cannot be done yet.
type Plan struct {
	Actions []Action
	// Warnings are things the user should know that do not stop the apply.
	Warnings []string
	// Notes explain values the planner chose (what conntrack max: auto
	// came to, and from what); printed as comments.
	Notes []string
	// Sysctls are the values the plan wants, changed or not: the daemon
	// reads them again to repair drift.
	Sysctls map[string]string
	// Waiting lists taps that are configured but do not exist yet; they are
	// adopted when they appear (libvirt and qemu create their own).
	Waiting []string
	// Removal is set when the plan removes networks or most of what kvmnet
	// manages: an apply then needs the user's explicit consent.
	Removal *Removal
	// Parts are the plans of the other backends of the host file (see
	// package backend), applied after the actions above, in order. The
	// engine, the API and the CLI print and count one plan.
	Parts []Part
}

// Part is one other backend's plan.
type Part struct {
	Backend string
	Plan    backend.Plan
}

// Empty reports whether applying the plan would change nothing.
func (p *Plan) Empty() bool {
	for _, part := range p.Parts {
		if !part.Plan.Empty() {
			return false
		}
	}
	return len(p.Actions) == 0
}

// String prints the plan, one action per line, or "no changes".
func (p *Plan) String() string {
	var b strings.Builder
	if p.Empty() {
		b.WriteString("no changes\n")
	}
	for _, a := range p.Actions {
		b.WriteString(a.String())
		b.WriteString("\n")
	}
	for _, w := range p.Waiting {
		fmt.Fprintf(&b, "# waiting for tap %s to appear (it is adopted when it does)\n", w)
	}
	for _, w := range p.Warnings {
		fmt.Fprintf(&b, "# warning: %s\n", w)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "# %s\n", n)
	}
	if p.Removal != nil {
		fmt.Fprintf(&b, "# removes %s\n", p.Removal)
	}
	for _, part := range p.Parts {
		if !part.Plan.Empty() {
			fmt.Fprintf(&b, "# backend %s\n%s", part.Backend, part.Plan)
		}
	}
	return b.String()
}

// Summary counts actions by op, for logs and the CLI.
func (p *Plan) Summary() string {
	if p.Empty() {
		return "no changes"
	}
	var parts []string
	if len(p.Actions) > 0 {
		parts = append(parts, p.linuxSummary())
	}
	for _, part := range p.Parts {
		if !part.Plan.Empty() {
			parts = append(parts, part.Backend+": "+part.Plan.Summary())
		}
	}
	return strings.Join(parts, "; ")
}

// linuxSummary counts the actions by op.
func (p *Plan) linuxSummary() string {
	counts := map[Op]int{}
	for _, a := range p.Actions {
		counts[a.Op()]++
	}
	// The ops in the order a person reads a plan; an op not listed here
	// (a new one) is counted after them, in the order it comes, never
	// left out.
	order := []Op{OpAddBridge, OpSetHWAddr, OpBridgeNF, OpConvert, OpRelease, OpAddTap, OpSetAlias, OpSetMTU, OpSetUp, OpSetMaster, OpAddAddr, OpDelAddr, OpIsolate, OpSetHTB, OpDelHTB, OpNft, OpSysctl, OpDelLink, OpCtDelete}
	for _, a := range p.Actions {
		if !slices.Contains(order, a.Op()) {
			order = append(order, a.Op())
		}
	}
	var parts []string
	for _, op := range order {
		if n := counts[op]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, op))
		}
	}
	return strings.Join(parts, ", ")
}
