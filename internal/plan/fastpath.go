package plan

import (
	"fmt"
	"maps"
	"slices"

	"sigs.k8s.io/knftables"

	"github.com/kvmnet/kvmnet/internal/model"
)

// The fast path (fastpath: true on a nat network) hands the network's
// established TCP and UDP flows to an nftables flowtable: once a flow is
// in it, its packets are forwarded from the ingress hook of the device
// they arrive on straight to the device they leave by, with the flow's
// NAT applied, without going through the host's routing and its
// prerouting, forward and postrouting hooks. It exists only while some
// network asks for it, so a kernel without flowtables (refused at plan
// time, see FeatureFlowtable) runs every other network unchanged.
//
// What still filters an offloaded packet, and what no longer does:
//
//   - Port security still applies. A guest's frame enters the bridge
//     through its tap, where the bridge table's prerouting chain (spoofguard,
//     storm control, the DHCP and RA guards) checks it; only then does the
//     bridge pass it up to its own device, whose ingress hook the flowtable
//     listens on. An offloaded guest can spoof no more than one that is not.
//   - kvmnet's forward chain no longer sees the flow's packets, nor do the
//     forward chains of other tables (docker, firewalld, iptables-nft). Only
//     established flows are offloaded, and only between a fast-path
//     network's bridge and its own egress (set fast_pairs), so what the
//     forward chain decides — which new connections may cross, into which
//     network — was decided before the flow was offloaded and still holds.
//   - The guard chain's from: lists, rate limits and maxConnections look at
//     new connections only; an offloaded flow was admitted by them first.
//   - A flow that is cut (a revoked forward's conntrack entries deleted,
//     `conntrack -D`) leaves the flowtable at its next garbage collection
//     (about a second): the flowtable drops entries whose conntrack entry
//     is dying. TCP FIN and RST go back to the slow path, which closes the
//     connection as usual.
//   - tc on the egress and on the taps still runs: the flowtable transmits
//     through the device's queue.
//   - Counters of kvmnet's rules stop counting an offloaded flow; the
//     flowtable's counter flag keeps the conntrack entry's packet and byte
//     counters going instead (with nf_conntrack_acct on).
const (
	// FlowtableName is kvmnet's flowtable in table inet kvmnet.
	FlowtableName = "fastpath"
	// SetFastPairs holds BR . EGRESS and EGRESS . BR of every fast-path
	// network: the flows the forward chain hands to the flowtable.
	SetFastPairs = "fast_pairs"
)

// flowtablePriority is the flowtable's hook priority, with its counter
// flag. knftables (v0.0.22) writes the priority as given, after "hook
// ingress priority", and has no field for the flowtable's flags; nft 1.0.6
// reads "counter" as a statement of the flowtable's block. Its Fake keeps
// the text as it is.
const flowtablePriority knftables.FlowtableIngressPriority = knftables.FilterIngressPriority + " ; counter"

// Flowtable is a flowtable of the desired table, or one read back.
type Flowtable struct {
	Name string
	// Devices are the interfaces whose ingress the flowtable hooks,
	// sorted. A flow is offloaded only when both of its devices are here.
	Devices []string
}

// fastpathRule hands established flows of fast-path networks to the
// flowtable. It comes first in the forward chain: the chain's first rule
// accepts established flows, and a rule after it would never run. "flow
// add" is not a verdict: the packet goes on through the chain.
var fastpathRule = Rule{
	Rule:    fmt.Sprintf(`ct state established meta l4proto { tcp, udp } iifname . oifname @%s flow add @%s`, SetFastPairs, FlowtableName),
	Comment: "fastpath-offload",
}

// fastpathSet is the definition of SetFastPairs.
var fastpathSet = Set{Name: SetFastPairs, Type: "ifname . ifname", Comment: "bridge . egress and egress . bridge of fast-path networks"}

// withFastpath adds the flowtable over devices, its set and its rule to
// rs; nothing when devices is empty (no network asks for the fast path).
func (rs Ruleset) withFastpath(devices []string) Ruleset {
	if len(devices) == 0 {
		return rs
	}
	devices = slices.Clone(devices)
	slices.Sort(devices)
	rs.Flowtables = []Flowtable{{Name: FlowtableName, Devices: slices.Compact(devices)}}
	rs.Sets = append(slices.Clone(rs.Sets), fastpathSet)
	chains := slices.Clone(rs.Chains)
	for i, c := range chains {
		if c.Name == "forward" {
			c.Rules = append([]Rule{fastpathRule}, c.Rules...)
			chains[i] = c
		}
	}
	rs.Chains = chains
	return rs
}

// fastpath records nat network n's part of the fast path, when it asks for
// it and the kernel has flowtables: its bridge and egress as flowtable
// devices and as pairs of fast_pairs. i is the network's index, for the
// refusal's position.
func (b *builder) fastpath(i int, n *model.Network, egress string) {
	if !n.Fastpath {
		return
	}
	path := FastpathPath(b.cfg, i)
	if slices.Contains(b.fastRefused, path) {
		return // the host's default, refused once for all its networks
	}
	if !b.require(FeatureFlowtable, path, "fastpath") {
		b.fastRefused = append(b.fastRefused, path)
		return
	}
	b.fastDevices = append(b.fastDevices, n.Bridge, egress)
	b.elems[SetFastPairs] = append(b.elems[SetFastPairs], NewElement(n.Bridge, egress), NewElement(egress, n.Bridge))
}

// FastpathPath is where network i's fastpath is set: its own fastpath:,
// or the host's default it takes.
func FastpathPath(cfg *model.Config, i int) string {
	p := fmt.Sprintf("networks[%d].fastpath", i)
	if _, _, ok := cfg.Positions.Lookup(p); !ok && cfg.Host.Fastpath {
		return "host.fastpath"
	}
	return p
}

// flowtablesMatch reports whether the kernel's flowtables are the desired
// ones, devices and all. A flowtable cannot lose a device by an element
// edit (knftables cannot write "delete flowtable … devices"), and the
// kernel drops a device from a flowtable when the device goes away (a
// bridge deleted by hand): either way the table is rebuilt.
func flowtablesMatch(have *TableState, rs Ruleset) bool {
	want := make(map[string]Flowtable, len(rs.Flowtables))
	for _, ft := range rs.Flowtables {
		want[ft.Name] = ft
	}
	return maps.EqualFunc(have.Flowtables, want, func(a, b Flowtable) bool { return slices.Equal(a.Devices, b.Devices) })
}

// addFlowtables renders the flowtables of a rebuild; they come before the
// chains whose rules name them.
func addFlowtables(tx *knftables.Transaction, fts []Flowtable) {
	for _, ft := range fts {
		tx.Add(&knftables.Flowtable{Name: ft.Name, Priority: knftables.PtrTo(flowtablePriority), Devices: quoteDevices(ft.Devices)})
	}
}

// quoteDevices quotes interface names for nft, as quoteKey does for
// elements: a name may be a keyword of nft's grammar.
func quoteDevices(devs []string) []string {
	out := make([]string, len(devs))
	for i, d := range devs {
		out[i] = `"` + d + `"`
	}
	return out
}
