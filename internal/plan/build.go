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
	return o.Claim[l.Name] && l.Alias == "" && (l.Kind == "bridge" || l.Kind == "tuntap")
}

// desiredPort is one VM interface resolved against the kernel.
type desiredPort struct {
	tap      string
	bridge   string
	vm       string
	create   bool
	spec     TapSpec
	isolated bool
}

// Build returns the actions that make obs match cfg. Errors that need the
// kernel to be found (an egress that does not exist, bridged networks that
// this version cannot apply) name the file position like parse errors.
//
// The actions come in this order, each for a reason:
//  1. bridges are created and brought up: ports and addresses need them;
//  2. taps kvmnet creates;
//  3. ports are enslaved and brought up: they need their bridge;
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
	var errs []error
	var (
		create, convert, enslave, addrAdd, addrDel, restore, need, release, del []Action
	)
	// Uplinks of bridged networks, to their bridges: a nat network whose
	// egress is one leaves through the bridge. uplinks are the stored
	// configurations of uplinks from before their conversion.
	uplinkBridge := UplinkBridges(cfg)
	uplinks := opt.uplinkOriginals()
	wantUplinks := map[string]bool{}
	natNets := 0
	defaultLink := obs.DefaultRouteLink
	if defaultLink == "" {
		defaultLink = defaultAfterConversion(cfg, obs, uplinks)
	}
	p := &Plan{}
	errs = append(errs, hostOverlaps(cfg, obs)...)
	wantBridges := map[string]bool{}
	wantPorts := map[string]desiredPort{}
	elems := Elements{}
	belems := Elements{} // the bridge table's
	classes := map[RateClass]bool{}
	storms := map[StormClass]bool{}
	connLimits := map[int]bool{}
	for i := range cfg.Networks {
		n := &cfg.Networks[i]
		if n.Mode == model.ModeBridged {
			bc, bv, err := bridgedNetwork(cfg, i, obs, opt, uplinks)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			create = append(create, bc...)
			convert = append(convert, bv...)
			wantBridges[n.Bridge] = true
			wantUplinks[n.Uplink] = true
			errs = append(errs, ports(cfg, n, opt, wantPorts, elems, belems, storms, connLimits)...)
			continue
		}
		natNets++
		egress, listenOn := Egress(n, defaultLink, uplinkBridge)
		if n.Egress == "" {
			if egress == "" {
				errs = append(errs, cfg.Errorf(fmt.Sprintf("networks[%d]", i),
					"network %q: no egress given and the host has no IPv4 default route; set egress: to the interface traffic should leave through (interfaces: %s)", n.Name, strings.Join(obs.Names(), ", ")))
				continue
			}
		} else if _, ok := obs.Links[egress]; !ok && listenOn == "" {
			errs = append(errs, cfg.Errorf(fmt.Sprintf("networks[%d].egress", i),
				"network %q: egress interface %q does not exist (interfaces: %s)", n.Name, egress, strings.Join(obs.Names(), ", ")))
			continue
		}
		if egress == n.Bridge {
			errs = append(errs, cfg.Errorf(fmt.Sprintf("networks[%d].egress", i),
				"network %q: egress %q is the network's own bridge; name the uplink interface instead", n.Name, egress))
			continue
		}
		if l, ok := obs.Links[n.Bridge]; ok && opt.claimed(l) {
			create = append(create, Action{Op: OpSetAlias, Link: n.Bridge, Alias: BridgeAlias(n.Name)})
			l.Alias = BridgeAlias(n.Name)
			obs.Links[n.Bridge] = l
		}
		if l, ok := obs.Links[n.Bridge]; ok && !IsOwnedBridge(l) {
			errs = append(errs, cfg.Errorf(fmt.Sprintf("networks[%d]", i),
				"network %q: a link named %q exists and is not kvmnet's (kind %s, alias %q); set bridge: to another name or remove that link", n.Name, n.Bridge, l.Kind, l.Alias))
			continue
		} else if ok && l.Alias != BridgeAlias(n.Name) {
			errs = append(errs, cfg.Errorf(fmt.Sprintf("networks[%d]", i),
				"network %q: bridge %q belongs to another kvmnet network (alias %q); give each network its own bridge:", n.Name, n.Bridge, l.Alias))
			continue
		}
		wantBridges[n.Bridge] = true
		gw := netip.PrefixFrom(n.Gateway, n.Subnet.Bits())
		l, exists := obs.Links[n.Bridge]
		if !exists {
			create = append(create,
				Action{Op: OpAddBridge, Link: n.Bridge, MTU: n.MTU, Alias: BridgeAlias(n.Name)},
				Action{Op: OpSetUp, Link: n.Bridge, Up: true})
			addrAdd = append(addrAdd, Action{Op: OpAddAddr, Link: n.Bridge, Addr: gw})
		} else {
			if n.MTU != 0 && l.MTU != n.MTU {
				create = append(create, Action{Op: OpSetMTU, Link: n.Bridge, MTU: n.MTU, PrevMTU: l.MTU})
			}
			if !l.Up {
				create = append(create, Action{Op: OpSetUp, Link: n.Bridge, Up: true})
			}
			if !slices.Contains(l.Addrs, gw) {
				addrAdd = append(addrAdd, Action{Op: OpAddAddr, Link: n.Bridge, Addr: gw})
			}
			for _, a := range l.Addrs {
				if a != gw {
					addrDel = append(addrDel, Action{Op: OpDelAddr, Link: n.Bridge, Addr: a})
				}
			}
		}
		errs = append(errs, ports(cfg, n, opt, wantPorts, elems, belems, storms, connLimits)...)
		elems[SetNATIfs] = append(elems[SetNATIfs], n.Bridge)
		elems[SetNATSame] = append(elems[SetNATSame], n.Bridge+" . "+n.Bridge)
		elems[SetNATOut] = append(elems[SetNATOut], n.Bridge+" . "+egress)
		elems[SetMasq] = append(elems[SetMasq], n.Subnet.Masked().String()+" . "+egress)
		elems[SetHairpin] = append(elems[SetHairpin], n.Subnet.Masked().String()+" . "+n.Bridge)
		if _, ok := obs.Links[egress]; ok || listenOn == "" {
			listenOn = egress
		}
		if err := forwards(cfg, i, egress, listenOn, obs, elems, classes, p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	// Ports, in tap name order so plans are stable.
	for _, name := range sortedKeys(wantPorts) {
		dp := wantPorts[name]
		l, exists := obs.Links[name]
		switch {
		case !exists && dp.create:
			create = append(create, Action{Op: OpAddTap, Link: name, Tap: dp.spec, Alias: TapAlias(dp.vm)})
			enslave = append(enslave, AdoptPort(Link{Name: name}, dp.bridge, dp.isolated)...)
		case !exists:
			p.Waiting = append(p.Waiting, name)
		default:
			if dp.create && opt.claimed(l) {
				// A tap kvmnet created but could not mark (killed in
				// between): claim it, so destroy removes it.
				create = append(create, Action{Op: OpSetAlias, Link: name, Alias: TapAlias(dp.vm), PrevAlias: l.Alias})
			}
			enslave = append(enslave, AdoptPort(l, dp.bridge, dp.isolated)...)
		}
	}

	// What kvmnet owns and no longer wants.
	for _, name := range obs.Names() {
		l := obs.Links[name]
		if _, wanted := wantPorts[name]; wanted || wantUplinks[name] {
			continue
		}
		if u, ok := uplinks[name]; ok && l.Master != "" && l.Master == u.Bridge {
			continue // released below, with its addresses
		}
		switch {
		case IsOwnedTap(l), opt.claimed(l) && l.Kind == "tuntap":
			gone := l
			del = append(del, Action{Op: OpDelLink, Link: name, Gone: &gone})
		case l.Master != "" && IsOwnedBridge(obs.Links[l.Master]):
			// An adopted tap that left the config is set free, not deleted:
			// it belongs to libvirt or qemu.
			release = append(release, Action{Op: OpSetMaster, Link: name, Master: "", PrevMaster: l.Master})
		}
	}
	for _, name := range sortedKeys(uplinks) {
		if wantUplinks[name] {
			continue
		}
		u := uplinks[name]
		l, ok := obs.Links[name]
		if !ok {
			continue // the uplink is gone; nothing to give back to
		}
		if l.Master != u.Bridge || !IsOwnedBridge(obs.Links[u.Bridge]) {
			if !hasAny(obs.Hosts[name], u.Config) {
				// The bridge went away with the host's addresses (ip link
				// del): give them back to the uplink all the same.
				u.Bridge = ""
				release = append(release, Action{Op: OpRelease, Link: name, Uplink: &u})
			}
			continue
		}
		release = append(release, Action{Op: OpRelease, Link: name, Uplink: &u})
	}
	for _, name := range obs.Names() {
		l := obs.Links[name]
		if (IsOwnedBridge(l) || opt.claimed(l) && l.Kind == "bridge") && !wantBridges[name] {
			gone := l
			for _, p := range obs.Names() {
				if obs.Links[p].Master == name {
					gone.Ports = append(gone.Ports, obs.Links[p])
				}
			}
			del = append(del, Action{Op: OpDelLink, Link: name, Gone: &gone})
		}
	}

	// Sysctls.
	if natNets > 0 {
		if cur := obs.Sysctls[SysctlIPForward]; cur != "1" {
			need = append(need, Action{Op: OpSysctl, Key: SysctlIPForward, Value: "1", Prev: cur})
		}
	} else if orig, ok := opt.Originals[SysctlIPForward]; ok {
		if cur := obs.Sysctls[SysctlIPForward]; cur != orig {
			restore = append(restore, Action{Op: OpSysctl, Key: SysctlIPForward, Value: orig, Prev: cur})
		}
	}

	var rc []RateClass
	for c := range classes {
		rc = append(rc, c)
	}
	var cl []int
	for n := range connLimits {
		cl = append(cl, n)
	}
	var sc []StormClass
	for c := range storms {
		sc = append(sc, c)
	}
	rs := DesiredRuleset(rc, cl)
	var nft, ct []Action
	// The bridge table first: guests are checked before they are routed.
	if ch := nftChange(&obs.Bridge, belems, len(wantBridges) > 0, DesiredBridgeRuleset(sc), BridgeTableComment); !ch.Empty() {
		nft = append(nft, Action{Op: OpNft, Nft: ch})
	}
	if ch := nftChange(&obs.Table, elems, len(wantBridges) > 0, rs, TableComment); !ch.Empty() {
		nft = append(nft, Action{Op: OpNft, Nft: ch})
		if err := checkConflicts(cfg, obs, ch, opt.Listeners); err != nil {
			return nil, err
		}
		if flows := revoked(&obs.Table, ch); len(flows) > 0 {
			ct = append(ct, Action{Op: OpCtDelete, Flows: flows})
		}
	}

	// Connections through revoked forwards are cut last, once nothing can
	// roll the forward back in.
	for _, group := range [][]Action{create, convert, enslave, addrAdd, addrDel, restore, nft, need, release, del, ct} {
		p.Actions = append(p.Actions, group...)
	}
	p.Removal = removal(p, obs)
	return p, nil
}

// AdoptPort is what makes link l a VM's port on bridge: enslave it, bring
// it up, set its isolated flag; nothing when it is so already. The flag
// belongs to the bridge port, so it comes after the enslaving (a new port
// starts without it). Build plans every port with it; the daemon plans a
// late tap with it alone, without planning the rest of the host.
func AdoptPort(l Link, bridge string, isolated bool) []Action {
	var out []Action
	if l.Master != bridge {
		out = append(out, Action{Op: OpSetMaster, Link: l.Name, Master: bridge, PrevMaster: l.Master})
	}
	if !l.Up {
		out = append(out, Action{Op: OpSetUp, Link: l.Name, Up: true})
	}
	if wasIsolated := l.Master == bridge && l.Isolated; isolated != wasIsolated {
		out = append(out, Action{Op: OpIsolate, Link: l.Name, Up: isolated})
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
func ports(cfg *model.Config, n *model.Network, opt Options, want map[string]desiredPort, elems, belems Elements, storms map[StormClass]bool, connLimits map[int]bool) []error {
	var errs []error
	for _, port := range cfg.Ports(n.Name) {
		if err := unsupportedPortSettings(cfg, port); err != nil {
			errs = append(errs, err)
			continue
		}
		want[port.Iface.Tap] = desiredPort{
			tap: port.Iface.Tap, bridge: n.Bridge, vm: port.VM, create: port.Iface.CreateTap,
			spec:     TapSpec{Queues: port.Iface.Queues, Owner: port.Iface.Owner},
			isolated: port.Iface.Security.Isolated,
		}
		if err := portSecurity(cfg, n, port, opt, elems, belems, storms, connLimits); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// unsupportedPortSettings refuses per-port settings this version cannot
// enforce, naming where they are.
func unsupportedPortSettings(cfg *model.Config, p model.Port) error {
	if qos := p.Iface.QoS; qos.Egress != "" || qos.Ingress != "" {
		// The path is only worked out for the message: vmIndex is a scan.
		path := fmt.Sprintf("vms[%d].interfaces[%d]", vmIndex(cfg, p.VM), p.Index)
		return cfg.Errorf(path+".qos", "vm %q: qos cannot be applied by this version of kvmnet; remove qos:", p.VM)
	}
	return nil
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
	return len(have.Sets) == len(rs.Sets)
}

// diff returns what to add to have and delete from it to get want. Both
// are sorted without repeats (Elements.sorted), and so are the results: one
// walk along the two, which at 10,000 forwards beats two maps.
func diff(have, want []string) (add, del []string) {
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
