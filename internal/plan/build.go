package plan

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/kvmnet/kvmnet/internal/model"
)

// Options tune Build.
type Options struct {
	// Originals are the values sysctls had before kvmnet changed them; a
	// sysctl no longer needed is put back to its original.
	Originals map[string]string
	// Claim names links an interrupted apply created but may not have
	// marked (the journal): unmarked bridges and taps of these names are
	// kvmnet's.
	Claim map[string]bool
	// Listeners, when set, lists the host's listening sockets on the
	// protocols and ports keep accepts; it is only called when a plan adds
	// forwards, for the ports they take (reading every process's file
	// descriptors to name a socket's owner is not free on a busy
	// hypervisor). Observed.Listeners is used when this is nil.
	Listeners func(keep func(proto string, port uint16) bool) ([]Listener, error)
	// Leases are the active DHCP leases of kvmnet's own servers, as
	// "NETWORK/MAC" to address: a guest may use its leased address as
	// source (DHCP-driven IP source guard).
	Leases map[string]netip.Addr
}

// claimed reports whether l is an unmarked link an interrupted apply made.
func (o Options) claimed(l Link) bool {
	return o.Claim[l.Name] && l.Alias == "" && (l.Kind == "bridge" || l.Kind == "tuntap" || l.Kind == "vlan")
}

// desiredPort is one VM interface resolved against the kernel.
type desiredPort struct {
	tap      string
	bridge   string
	vm       string
	create   bool
	spec     TapSpec
	isolated bool
	// qos is the port's shaping, qosPath where it is in the file (set
	// only when qos is).
	qos     model.QoS
	qosPath string
}

// Build returns the actions that make obs match cfg. Errors that need the
// kernel to be found (an egress that does not exist, bridged networks that
// this version cannot apply) name the file position like parse errors.
//
// The actions come in this order, each for a reason:
//  1. bridges are created and brought up: ports and addresses need them;
//  2. taps kvmnet creates;
//  3. ports are enslaved and brought up: they need their bridge;
//     then their tc qdiscs (QoS), before the firewall lets traffic
//     through;
//  4. addresses are added before stale ones are deleted, so a bridge is
//     never without its gateway while its prefix changes;
//  5. sysctls that go back to their original values (ip_forward off) come
//     before the firewall goes away: never forward unfiltered;
//  6. the nftables table, in one transaction;
//  7. sysctls that kvmnet needs (ip_forward on) only once the firewall is in
//     place, for the same reason;
//  8. ports that left are released, and links kvmnet no longer needs are
//     deleted last, so guests keep working until the new state stands.
func Build(cfg *model.Config, obs *Observed, opt Options) (*Plan, error) {
	b := newBuilder(cfg, obs, opt)
	// Each concern plans into its own group of actions; the groups are
	// composed below in the order above.
	b.errs = append(b.errs, hostOverlaps(cfg, obs)...)
	b.conntrack()
	for i := range cfg.Networks {
		if cfg.Networks[i].Mode == model.ModeBridged {
			b.bridged(i)
		} else {
			b.nat(i)
		}
	}
	if err := errors.Join(b.errs...); err != nil {
		return nil, err
	}
	b.ports()
	b.shape()
	if err := errors.Join(b.errs...); err != nil {
		return nil, err
	}
	b.collect()
	b.sysctls()
	if err := b.tables(); err != nil {
		return nil, err
	}
	// Connections through revoked forwards are cut last, once nothing can
	// roll the forward back in. tc (QoS) comes once the ports it shapes
	// are on their bridges and before the firewall lets traffic through.
	for _, group := range [][]Action{b.create, b.convert, b.enslave, b.vlan, b.tc, b.addrAdd, b.addrDel, b.restore, b.nft, b.need, b.release, b.del, b.ct} {
		b.p.Actions = append(b.p.Actions, group...)
	}
	b.p.Removal = removal(b.p, obs)
	return b.p, nil
}

// builder is one Build: the observation and options, what the concerns
// want, and the group of actions each plans into.
type builder struct {
	cfg *model.Config
	obs *Observed
	opt Options
	p   *Plan

	errs []error
	// The groups of actions, composed by Build in its documented order.
	create, convert, enslave, vlan, tc, addrAdd, addrDel, restore, nft, need, release, del, ct []Action

	// uplinkBridge maps uplinks of bridged networks to their bridges: a
	// nat network whose egress is one leaves through the bridge. uplinks
	// are the stored configurations of uplinks from before their
	// conversion.
	uplinkBridge map[string]string
	uplinks      map[string]Uplink
	defaultLink  string
	natNets      int

	wantBridges, wantUplinks map[string]bool
	wantPorts                map[string]desiredPort
	// wantVLANLinks are the 802.1Q links of egressVlan.
	wantVLANLinks map[string]bool
	// elems and belems are the inet and bridge tables' elements.
	elems, belems Elements
	classes       map[RateClass]bool
	storms        map[StormClass]bool
	connLimits    map[int]bool
	newConns      map[NewConnClass]bool
	// fastDevices are the flowtable's devices (see fastpath), fastRefused
	// the places of fastpath: refused already.
	fastDevices, fastRefused []string
}

func newBuilder(cfg *model.Config, obs *Observed, opt Options) *builder {
	b := &builder{cfg: cfg, obs: obs, opt: opt, p: &Plan{},
		uplinkBridge: UplinkBridges(cfg), uplinks: opt.uplinkOriginals(),
		wantBridges: map[string]bool{}, wantUplinks: map[string]bool{}, wantPorts: map[string]desiredPort{},
		wantVLANLinks: map[string]bool{},
		elems:         Elements{}, belems: Elements{},
		classes: map[RateClass]bool{}, storms: map[StormClass]bool{}, connLimits: map[int]bool{},
		newConns: map[NewConnClass]bool{}}
	b.defaultLink = obs.DefaultRouteLink
	if b.defaultLink == "" {
		b.defaultLink = defaultAfterConversion(cfg, obs, b.uplinks)
	}
	return b
}

// bridged plans bridged network i: its bridge and the uplink's conversion
// (see bridgedNetwork), and its ports.
func (b *builder) bridged(i int) {
	n := &b.cfg.Networks[i]
	bc, bv, err := bridgedNetwork(b.cfg, i, b.obs, b.opt, b.uplinks)
	if err != nil {
		b.errs = append(b.errs, err)
		return
	}
	b.create = append(b.create, bc...)
	b.convert = append(b.convert, bv...)
	b.wantBridges[n.Bridge] = true
	b.wantUplinks[n.Uplink] = true
	b.bridgeVLANs(i)
	b.errs = append(b.errs, ports(b.cfg, n, b.opt, b.wantPorts, b.elems, b.belems, b.storms, b.connLimits, b.newConns)...)
}

// nat plans nat network i: its egress, its bridge and gateway address,
// its ports, its elements of the inet table and its forwards.
func (b *builder) nat(i int) {
	cfg, obs, opt := b.cfg, b.obs, b.opt
	n := &cfg.Networks[i]
	b.natNets++
	egress, listenOn := Egress(n, b.defaultLink, b.uplinkBridge)
	if n.Egress == "" {
		if egress == "" {
			b.errs = append(b.errs, cfg.Errorf(fmt.Sprintf("networks[%d]", i),
				"network %q: no egress given and the host has no IPv4 default route; set egress: to the interface traffic should leave through (interfaces: %s)", n.Name, strings.Join(obs.Names(), ", ")))
			return
		}
	} else if _, ok := obs.Links[egress]; !ok && listenOn == "" {
		b.errs = append(b.errs, cfg.Errorf(fmt.Sprintf("networks[%d].egress", i),
			"network %q: egress interface %q does not exist (interfaces: %s)", n.Name, egress, strings.Join(obs.Names(), ", ")))
		return
	}
	if egress = b.egressVLAN(i, egress); egress == "" {
		return
	} else if n.EgressVLAN != 0 {
		listenOn = "" // forwards listen on the VLAN link's addresses
	}
	if egress == n.Bridge {
		b.errs = append(b.errs, cfg.Errorf(fmt.Sprintf("networks[%d].egress", i),
			"network %q: egress %q is the network's own bridge; name the uplink interface instead", n.Name, egress))
		return
	}
	if l, ok := obs.Links[n.Bridge]; ok && opt.claimed(l) {
		b.create = append(b.create, SetAlias{Name: n.Bridge, Alias: BridgeAlias(n.Name), Prev: l.Alias})
		l.Alias = BridgeAlias(n.Name)
		obs.Links[n.Bridge] = l
	}
	if l, ok := obs.Links[n.Bridge]; ok && !IsOwnedBridge(l) {
		b.errs = append(b.errs, cfg.Errorf(fmt.Sprintf("networks[%d]", i),
			"network %q: a link named %q exists and is not kvmnet's (kind %s, alias %q); set bridge: to another name or remove that link", n.Name, n.Bridge, l.Kind, l.Alias))
		return
	} else if ok && l.Alias != BridgeAlias(n.Name) {
		b.errs = append(b.errs, cfg.Errorf(fmt.Sprintf("networks[%d]", i),
			"network %q: bridge %q belongs to another kvmnet network (alias %q); give each network its own bridge:", n.Name, n.Bridge, l.Alias))
		return
	}
	b.wantBridges[n.Bridge] = true
	b.natBridge(n)
	b.errs = append(b.errs, ports(cfg, n, opt, b.wantPorts, b.elems, b.belems, b.storms, b.connLimits, b.newConns)...)
	subnet := n.Subnet.Masked().String()
	b.elems[SetNATIfs] = append(b.elems[SetNATIfs], NewElement(n.Bridge))
	b.elems[SetNATSame] = append(b.elems[SetNATSame], NewElement(n.Bridge, n.Bridge))
	b.elems[SetNATOut] = append(b.elems[SetNATOut], NewElement(n.Bridge, egress))
	b.elems[SetMasq] = append(b.elems[SetMasq], NewElement(subnet, egress))
	b.elems[SetHairpin] = append(b.elems[SetHairpin], NewElement(subnet, n.Bridge))
	b.fastpath(i, n, egress)
	if _, ok := obs.Links[egress]; ok || listenOn == "" {
		listenOn = egress
	}
	if err := forwards(cfg, i, egress, listenOn, obs, b.elems, b.classes, b.p); err != nil {
		b.errs = append(b.errs, err)
	}
}

// natBridge plans nat network n's bridge (created, its MTU, up) and its
// gateway address, the only address it keeps.
func (b *builder) natBridge(n *model.Network) {
	gw := netip.PrefixFrom(n.Gateway, n.Subnet.Bits())
	l, exists := b.obs.Links[n.Bridge]
	mac := BridgeMAC(n.Name)
	if !exists {
		b.create = append(b.create,
			AddBridge{Name: n.Bridge, MTU: n.MTU, Alias: BridgeAlias(n.Name), HWAddr: mac},
			SetUp{Name: n.Bridge, Up: true})
		b.addrAdd = append(b.addrAdd, AddAddr{Name: n.Bridge, Addr: gw})
		return
	}
	if l.HWAddr != mac {
		b.create = append(b.create, SetHWAddr{Name: n.Bridge, MAC: mac, Prev: l.HWAddr})
	}
	if n.MTU != 0 && l.MTU != n.MTU {
		b.create = append(b.create, SetMTU{Name: n.Bridge, MTU: n.MTU, Prev: l.MTU})
	}
	if !l.Up {
		b.create = append(b.create, SetUp{Name: n.Bridge, Up: true})
	}
	if !slices.Contains(l.Addrs, gw) {
		b.addrAdd = append(b.addrAdd, AddAddr{Name: n.Bridge, Addr: gw})
	}
	for _, a := range l.Addrs {
		if a != gw {
			b.addrDel = append(b.addrDel, DelAddr{Name: n.Bridge, Addr: a})
		}
	}
}

// ports plans the VM interfaces the networks want, in tap name order so
// plans are stable: taps kvmnet creates, ports enslaved, taps waited for.
func (b *builder) ports() {
	for _, name := range sortedKeys(b.wantPorts) {
		dp := b.wantPorts[name]
		l, exists := b.obs.Links[name]
		switch {
		case !exists && dp.create:
			b.create = append(b.create, AddTap{Name: name, Spec: dp.spec, Alias: TapAlias(dp.vm)})
			b.enslave = appendAdoptPort(b.enslave, Link{Name: name}, dp.bridge, dp.isolated)
		case !exists:
			b.p.Waiting = append(b.p.Waiting, name)
		default:
			if dp.create && b.opt.claimed(l) {
				// A tap kvmnet created but could not mark (killed in
				// between): claim it, so destroy removes it.
				b.create = append(b.create, SetAlias{Name: name, Alias: TapAlias(dp.vm), Prev: l.Alias})
			}
			b.enslave = appendAdoptPort(b.enslave, l, dp.bridge, dp.isolated)
		}
	}
}

// collect plans away what kvmnet owns and no longer wants: its taps
// deleted, adopted taps set free, uplinks given their configuration back,
// its bridges deleted (taps before bridges: see apply's recreate).
func (b *builder) collect() {
	obs, opt := b.obs, b.opt
	for _, name := range obs.Names() {
		l := obs.Links[name]
		if _, wanted := b.wantPorts[name]; wanted || b.wantUplinks[name] {
			continue
		}
		if u, ok := b.uplinks[name]; ok && l.Master != "" && l.Master == u.Bridge {
			continue // released below, with its addresses
		}
		switch {
		case IsOwnedTap(l), opt.claimed(l) && l.Kind == "tuntap", (IsOwnedVLAN(l) || opt.claimed(l) && l.Kind == "vlan") && !b.wantVLANLinks[name]:
			gone := l
			b.del = append(b.del, DelLink{Gone: gone})
		case l.Master != "" && IsOwnedBridge(obs.Links[l.Master]):
			// An adopted tap that left the config is set free, not deleted:
			// it belongs to libvirt or qemu.
			b.release = append(b.release, SetMaster{Name: name, Master: "", Prev: l.Master})
		}
	}
	for _, name := range sortedKeys(b.uplinks) {
		if b.wantUplinks[name] {
			continue
		}
		u := b.uplinks[name]
		l, ok := obs.Links[name]
		if !ok {
			continue // the uplink is gone; nothing to give back to
		}
		if l.Master != u.Bridge || !IsOwnedBridge(obs.Links[u.Bridge]) {
			if !hasAny(obs.Hosts[name], u.Config) {
				// The bridge went away with the host's addresses (ip link
				// del): give them back to the uplink all the same.
				u.Bridge = ""
				b.release = append(b.release, Release{Name: name, Uplink: u})
			}
			continue
		}
		b.release = append(b.release, Release{Name: name, Uplink: u})
	}
	for _, name := range obs.Names() {
		l := obs.Links[name]
		if (IsOwnedBridge(l) || opt.claimed(l) && l.Kind == "bridge") && !b.wantBridges[name] {
			gone := l
			for _, p := range obs.Names() {
				if obs.Links[p].Master == name {
					gone.Ports = append(gone.Ports, obs.Links[p])
				}
			}
			b.del = append(b.del, DelLink{Gone: gone})
		}
	}
}

// sysctls plans ip_forward: on while nat networks exist, else back to
// what it was before kvmnet.
func (b *builder) sysctls() {
	if b.natNets > 0 {
		b.wantSysctl(SysctlIPForward, "1")
		if cur := b.obs.Sysctls[SysctlIPForward]; cur != "1" {
			b.need = append(b.need, SetSysctl{Key: SysctlIPForward, Value: "1", Prev: cur})
		}
	} else if orig, ok := b.opt.Originals[SysctlIPForward]; ok {
		if cur := b.obs.Sysctls[SysctlIPForward]; cur != orig {
			b.restore = append(b.restore, SetSysctl{Key: SysctlIPForward, Value: orig, Prev: cur})
		}
	}
}

// tables plans kvmnet's two nftables tables from the elements the other
// concerns collected, and the cut of connections through revoked
// forwards.
func (b *builder) tables() error {
	var rc []RateClass
	for c := range b.classes {
		rc = append(rc, c)
	}
	var cl []int
	for n := range b.connLimits {
		cl = append(cl, n)
	}
	var sc []StormClass
	for c := range b.storms {
		sc = append(sc, c)
	}
	var nc []NewConnClass
	for c := range b.newConns {
		nc = append(nc, c)
	}
	rs := DesiredRuleset(rc, cl, nc).withFastpath(b.fastDevices)
	// The bridge table first: guests are checked before they are routed.
	if ch := nftChange(&b.obs.Bridge, b.belems, len(b.wantBridges) > 0, DesiredBridgeRuleset(sc), BridgeTableComment); !ch.Empty() {
		b.nft = append(b.nft, ch)
	}
	if ch := nftChange(&b.obs.Table, b.elems, len(b.wantBridges) > 0, rs, TableComment); !ch.Empty() {
		b.nft = append(b.nft, ch)
		if err := checkConflicts(b.cfg, b.obs, ch, b.opt.Listeners); err != nil {
			return err
		}
		if flows := revoked(&b.obs.Table, ch); len(flows) > 0 {
			b.ct = append(b.ct, CutFlows{Flows: flows})
		}
	}
	return nil
}

// AdoptPort is what makes link l a VM's port on bridge: enslave it, bring
// it up, set its isolated flag; nothing when it is so already. The flag
// belongs to the bridge port, so it comes after the enslaving (a new port
// starts without it). Build plans every port with it; the daemon plans a
// late tap with it alone, without planning the rest of the host.
//
// On a bridge that filters VLANs, vlans are the port's (PortVLANs; nil
// when the bridge does not filter): the port joins with the kernel's
// default PVID 1 and gets its own VLANs in the same apply, so a late tap
// never sits on the untagged LAN until the next converge.
func AdoptPort(l Link, bridge string, isolated bool, vlans []VLAN) []Action {
	out := appendAdoptPort(nil, l, bridge, isolated)
	if vlans == nil {
		return out
	}
	have := defaultVLANs()
	if l.Master == bridge {
		have = l.VLANs
	}
	if add, del := VLANDiff(have, vlans); len(add)+len(del) > 0 {
		out = append(out, SetPortVLANs{Change: VLANChange{Port: l.Name, Have: have, Want: vlans}})
	}
	return out
}

// appendAdoptPort appends AdoptPort's actions to out: Build plans
// thousands of ports and need not allocate for each.
func appendAdoptPort(out []Action, l Link, bridge string, isolated bool) []Action {
	if l.Master != bridge {
		out = append(out, SetMaster{Name: l.Name, Master: bridge, Prev: l.Master})
	}
	if !l.Up {
		out = append(out, SetUp{Name: l.Name, Up: true})
	}
	if wasIsolated := l.Master == bridge && l.Isolated; isolated != wasIsolated {
		out = append(out, SetIsolated{Name: l.Name, On: isolated})
	}
	return out
}

// Egress is the link nat network n's traffic leaves through: its egress:,
// or else defaultLink (the default route's). A link that is, or becomes,
// a bridged network's uplink (uplinkBridge, see UplinkBridges) leaves its
// place to that bridge; listenOn is then the uplink, whose addresses the
// bridge takes. "" when there is neither.
func Egress(n *model.Network, defaultLink string, uplinkBridge map[string]string) (egress, listenOn string) {
	egress = n.Egress
	if egress == "" {
		egress = defaultLink
	}
	if b, ok := uplinkBridge[egress]; ok {
		return b, egress
	}
	return egress, ""
}

// ports records the VM interfaces of network n and their port security.
func ports(cfg *model.Config, n *model.Network, opt Options, want map[string]desiredPort, elems, belems Elements, storms map[StormClass]bool, connLimits map[int]bool, newConns map[NewConnClass]bool) []error {
	var errs []error
	for _, port := range cfg.Ports(n.Name) {
		dp := desiredPort{
			tap: port.Iface.Tap, bridge: n.Bridge, vm: port.VM, create: port.Iface.CreateTap,
			spec:     TapSpec{Queues: port.Iface.Queues, Owner: port.Iface.Owner},
			isolated: port.Iface.Security.Isolated,
			qos:      port.Iface.QoS,
		}
		if q := port.Iface.QoS; !q.Egress.IsZero() || !q.Ingress.IsZero() {
			// The path is only worked out for messages: vmIndex is a scan.
			dp.qosPath = fmt.Sprintf("vms[%d].interfaces[%d].qos", vmIndex(cfg, port.VM), port.Index)
		}
		want[port.Iface.Tap] = dp
		if err := portSecurity(cfg, n, port, opt, elems, belems, storms, connLimits, newConns); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func vmIndex(cfg *model.Config, name string) int {
	for i, vm := range cfg.VMs {
		if vm.Name == name {
			return i
		}
	}
	return -1
}

// nftChange diffs a kernel table against the desired ruleset and
// elements.
func nftChange(have *TableState, want Elements, wantTable bool, rs Ruleset, version string) *NftChange {
	if !wantTable {
		if have.Exists {
			return &NftChange{Ruleset: Ruleset{Family: rs.Family}, Delete: true}
		}
		return &NftChange{}
	}
	want = want.sorted()
	if !have.Exists || have.Comment != version || !rulesMatch(have, rs) {
		return &NftChange{Ruleset: rs, Version: version, Rebuild: true, Exists: have.Exists, Elements: want}
	}
	ch := &NftChange{Ruleset: rs, Version: version, Add: Elements{}, Del: Elements{}}
	haveSets := have.Sets.sorted()
	for _, s := range rs.Sets {
		if s.Dynamic {
			continue // filled by the kernel
		}
		add, del := diff(haveSets[s.Name], want[s.Name])
		if len(add) > 0 {
			ch.Add[s.Name] = add
		}
		if len(del) > 0 {
			ch.Del[s.Name] = del
		}
	}
	return ch
}

// rulesMatch compares the kernel's chains, rules (by comment) and sets
// with the desired ruleset.
func rulesMatch(have *TableState, rs Ruleset) bool {
	if len(have.Chains) != len(rs.Chains) {
		return false
	}
	for _, c := range rs.Chains {
		got, ok := have.Chains[c.Name]
		if !ok || len(got) != len(c.Rules) {
			return false
		}
		for i, r := range c.Rules {
			if got[i] != r.Comment {
				return false
			}
		}
	}
	for _, s := range rs.Sets {
		if _, ok := have.Sets[s.Name]; !ok {
			return false
		}
	}
	return len(have.Sets) == len(rs.Sets) && flowtablesMatch(have, rs)
}

// diff returns what to add to have and delete from it to get want. Both
// are sorted without repeats (Elements.sorted), and so are the results: one
// walk along the two, which at 10,000 forwards beats two maps.
func diff[E ~string](have, want []E) (add, del []E) {
	i, j := 0, 0
	for i < len(have) || j < len(want) {
		switch {
		case j == len(want) || (i < len(have) && have[i] < want[j]):
			del = append(del, have[i])
			i++
		case i == len(have) || want[j] < have[i]:
			add = append(add, want[j])
			j++
		default:
			i++
			j++
		}
	}
	return add, del
}
