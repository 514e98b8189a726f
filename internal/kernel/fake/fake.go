// Package fake is a kernel in memory: it keeps what kernel.Host would
// observe (links, addresses, the host's configuration, kvmnet's nftables
// tables, sysctls) and changes it as the real calls would. The engine,
// apply and the planners run on it without root, so state-transition
// tests can feed a sequence of configs and check the kernel after each
// (in the style of tailscale's TestRouterStates).
//
// It models what kvmnet's plans rely on, not the whole kernel: a bridge
// takes no address from its ports, a deleted bridge frees its ports, a
// conversion moves the uplink's addresses and host configuration to its
// bridge. nftables changes are applied to the observed table state
// (chains by rule comment, set elements), as nft would leave them.
package fake

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"sigs.k8s.io/knftables"

	"github.com/kvmnet/kvmnet/internal/baseline"
	"github.com/kvmnet/kvmnet/internal/doctor"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// Kernel is the fake. Its zero value is not usable; call New.
type Kernel struct {
	mu        sync.Mutex
	obs       plan.Observed
	snapshots map[string]plan.TableState
	flows     []plan.Flow
	// Gateway is what DefaultGateway returns.
	Gateway netip.Addr
	// Sockets are what Listeners returns (before keep filters them).
	Sockets []plan.Listener
	// Drops are what DropCounters returns.
	Drops map[string]map[string]uint64
	// Calls counts the calls that change something.
	Calls int
	// Offloaded are the connections OffloadedFlows reports, by subnet.
	Offloaded map[netip.Prefix]int
	// Lacks are the features this kernel lacks, with the kernel's
	// refusal, as Observe reports them when asked.
	Lacks map[plan.Feature]string
	// Foreign are the base chains of other tables ForeignChains returns;
	// Conntrack what ConntrackStats returns; NoDevices the device nodes
	// DeviceMissing reports missing, with why.
	Foreign   []doctor.Chain
	Conntrack doctor.Conntrack
	NoDevices map[string]string
	// Links, Ethtool and Rules are what LinkStats, EthtoolStats and
	// RuleCounters return.
	Links   map[string]baseline.LinkStats
	Ethtool map[string]map[string]uint64
	Rules   map[string]uint64
}

// EthtoolStats implements baseline.Kernel.
func (k *Kernel) EthtoolStats() (map[string]map[string]uint64, error) {
	out := make(map[string]map[string]uint64, len(k.Ethtool))
	for name, m := range k.Ethtool {
		out[name] = maps.Clone(m)
	}
	return out, nil
}

// LinkStats implements baseline.Kernel.
func (k *Kernel) LinkStats() (map[string]baseline.LinkStats, error) { return maps.Clone(k.Links), nil }

// RuleCounters implements baseline.Kernel.
func (k *Kernel) RuleCounters(context.Context) (map[string]uint64, error) {
	return maps.Clone(k.Rules), nil
}

// ForeignChains implements doctor.Kernel.
func (k *Kernel) ForeignChains(context.Context, []string) ([]doctor.Chain, error) {
	return slices.Clone(k.Foreign), nil
}

// ConntrackStats implements doctor.Kernel.
func (k *Kernel) ConntrackStats() (doctor.Conntrack, error) {
	c := k.Conntrack
	c.PerCPU = maps.Clone(c.PerCPU)
	return c, nil
}

// DeviceMissing implements doctor.Kernel.
func (k *Kernel) DeviceMissing(path string) string { return k.NoDevices[path] }

// New returns a fake kernel holding obs (copied). Links in obs.Hosts
// hold the host's addresses and routes.
func New(obs *plan.Observed) *Kernel {
	k := &Kernel{obs: copyObserved(obs, true), snapshots: map[string]plan.TableState{}}
	if k.obs.Links == nil {
		k.obs.Links = map[string]plan.Link{}
	}
	if k.obs.Sysctls == nil {
		k.obs.Sysctls = map[string]string{}
	}
	if k.obs.Hosts == nil {
		k.obs.Hosts = map[string]plan.HostConfig{}
	}
	return k
}

// Observe returns a copy of the state; the host configurations only when
// opt asks for them, as the real one.
func (k *Kernel) Observe(_ context.Context, opt plan.ObserveOptions) (*plan.Observed, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	o := copyObserved(&k.obs, opt.Hosts)
	for _, f := range opt.Features {
		if why, ok := k.Lacks[f]; ok {
			if o.Missing == nil {
				o.Missing = map[plan.Feature]string{}
			}
			o.Missing[f] = why
		}
	}
	return &o, nil
}

// Flows returns the connections DeleteFlows was asked to cut.
func (k *Kernel) Flows() []plan.Flow {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.flows)
}

// Dump prints the state in a stable text form, for golden files and
// comparisons: links with their attributes, sysctls, then both tables.
func (k *Kernel) Dump() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(k.obs.Links)) {
		l := k.obs.Links[name]
		fmt.Fprintf(&b, "link %s kind %s", l.Name, l.Kind)
		if l.Alias != "" {
			fmt.Fprintf(&b, " alias %q", l.Alias)
		}
		if l.Master != "" {
			fmt.Fprintf(&b, " master %s", l.Master)
		}
		if l.MTU != 0 {
			fmt.Fprintf(&b, " mtu %d", l.MTU)
		}
		if l.HWAddr != "" {
			fmt.Fprintf(&b, " address %s", l.HWAddr)
		}
		fmt.Fprintf(&b, " up %t", l.Up)
		if l.Isolated {
			b.WriteString(" isolated")
		}
		if l.BridgeNF != "" {
			fmt.Fprintf(&b, " bridge-nf %s", l.BridgeNF)
		}
		for _, a := range l.Addrs {
			fmt.Fprintf(&b, " inet %s", a)
		}
		b.WriteString(dumpVLANs(l, k.obs.Links))
		b.WriteString(dumpHTB(l))
		b.WriteString("\n")
	}
	for _, key := range slices.Sorted(maps.Keys(k.obs.Sysctls)) {
		fmt.Fprintf(&b, "sysctl %s = %s\n", key, k.obs.Sysctls[key])
	}
	for _, t := range []struct {
		fam   string
		state *plan.TableState
	}{{"bridge", &k.obs.Bridge}, {"inet", &k.obs.Table}} {
		if !t.state.Exists {
			continue
		}
		fmt.Fprintf(&b, "table %s %s (%s)\n", t.fam, plan.TableName, t.state.Comment)
		for _, f := range slices.Sorted(maps.Keys(t.state.Flowtables)) {
			fmt.Fprintf(&b, "  flowtable %s: %s\n", f, strings.Join(t.state.Flowtables[f].Devices, ", "))
		}
		for _, c := range slices.Sorted(maps.Keys(t.state.Chains)) {
			fmt.Fprintf(&b, "  chain %s: %s\n", c, strings.Join(t.state.Chains[c], ", "))
		}
		for _, s := range slices.Sorted(maps.Keys(t.state.Sets)) {
			var els []string
			for _, e := range t.state.Sets[s] {
				els = append(els, string(e))
			}
			slices.Sort(els)
			fmt.Fprintf(&b, "  set %s: %s\n", s, strings.Join(els, ", "))
		}
	}
	return b.String()
}

// change runs f on the state with the lock held, counting the call.
func (k *Kernel) change(f func(o *plan.Observed) error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.Calls++
	return f(&k.obs)
}

// Edit changes the kernel as someone else would, behind kvmnet's back
// (drift for a test to repair). It counts as no call.
func (k *Kernel) Edit(f func(o *plan.Observed)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f(&k.obs)
}

// link runs f on link name, which must exist.
func (k *Kernel) link(name string, f func(l *plan.Link) error) error {
	return k.change(func(o *plan.Observed) error {
		l, ok := o.Links[name]
		if !ok {
			return fmt.Errorf("link %q: no such device", name)
		}
		if err := f(&l); err != nil {
			return err
		}
		o.Links[name] = l
		return nil
	})
}

func (k *Kernel) add(l plan.Link) error {
	return k.change(func(o *plan.Observed) error {
		if _, ok := o.Links[l.Name]; ok {
			return fmt.Errorf("link %q: file exists", l.Name)
		}
		o.Links[l.Name] = l
		return nil
	})
}

// AddBridge implements apply.Links.
func (k *Kernel) AddBridge(name string, mtu int, alias string) error {
	if mtu == 0 {
		mtu = 1500
	}
	// kernel.Host creates bridges with nf_call_* off (ip link add ... nf_call_iptables 0).
	k.mu.Lock()
	vlans := k.joinVLANs()
	k.mu.Unlock()
	return k.add(plan.Link{Name: name, Kind: "bridge", Alias: alias, MTU: mtu, BridgeNF: "off", VLANs: vlans})
}

// AddTap implements apply.Links.
func (k *Kernel) AddTap(name string, _ plan.TapSpec, alias string) error {
	return k.add(plan.Link{Name: name, Kind: "tuntap", Alias: alias, MTU: 1500})
}

// DeleteLink implements apply.Links; a bridge's ports leave it.
func (k *Kernel) DeleteLink(name string) error {
	return k.change(func(o *plan.Observed) error {
		if _, ok := o.Links[name]; !ok {
			return fmt.Errorf("link %q: no such device", name)
		}
		delete(o.Links, name)
		delete(o.Hosts, name)
		for n, l := range o.Links {
			if l.Master == name {
				l.Master, l.Isolated, l.VLANs = "", false, nil
				o.Links[n] = l
			}
		}
		return nil
	})
}

// DeleteLinks implements apply.Links.
func (k *Kernel) DeleteLinks(names []string) []error {
	errs := make([]error, len(names))
	for i, n := range names {
		errs[i] = k.DeleteLink(n)
	}
	return errs
}

// SetMaster implements apply.Links.
func (k *Kernel) SetMaster(name, master string) error {
	k.mu.Lock()
	_, ok := k.obs.Links[master]
	k.mu.Unlock()
	if master != "" && !ok {
		return fmt.Errorf("master %q: no such device", master)
	}
	k.mu.Lock()
	vlans := k.joinVLANs()
	k.mu.Unlock()
	return k.link(name, func(l *plan.Link) error {
		if l.Master != master {
			// A bridge port's flags and VLANs belong to the port:
			// leaving a bridge ends it, joining one starts a port with
			// the defaults (the default PVID, when the kernel has VLANs).
			l.Isolated = false
			l.VLANs = nil
			if master != "" {
				l.VLANs = vlans
			}
		}
		l.Master = master
		return nil
	})
}

// SetMTU implements apply.Links.
func (k *Kernel) SetMTU(name string, mtu int) error {
	return k.link(name, func(l *plan.Link) error { l.MTU = mtu; return nil })
}

// SetHWAddr implements apply.Links.
func (k *Kernel) SetHWAddr(name, mac string) error {
	return k.link(name, func(l *plan.Link) error { l.HWAddr = mac; return nil })
}

// SetAlias implements apply.Links.
func (k *Kernel) SetAlias(name, alias string) error {
	return k.link(name, func(l *plan.Link) error { l.Alias = alias; return nil })
}

// SetUp implements apply.Links.
func (k *Kernel) SetUp(name string, up bool) error {
	return k.link(name, func(l *plan.Link) error { l.Up = up; return nil })
}

// SetIsolated implements apply.Links.
func (k *Kernel) SetIsolated(name string, on bool) error {
	return k.link(name, func(l *plan.Link) error {
		if l.Master == "" {
			return fmt.Errorf("link %q is no bridge port", name)
		}
		l.Isolated = on
		return nil
	})
}

// SetBridgeNF implements apply.Links.
func (k *Kernel) SetBridgeNF(name string, on bool) error {
	return k.link(name, func(l *plan.Link) error {
		l.BridgeNF = map[bool]string{true: "on", false: "off"}[on]
		return nil
	})
}

// AddAddr implements apply.Addresses.
func (k *Kernel) AddAddr(name string, p netip.Prefix) error {
	return k.link(name, func(l *plan.Link) error {
		if slices.Contains(l.Addrs, p) {
			return fmt.Errorf("address %s on %q: file exists", p, name)
		}
		l.Addrs = append(slices.Clone(l.Addrs), p)
		return nil
	})
}

// DelAddr implements apply.Addresses.
func (k *Kernel) DelAddr(name string, p netip.Prefix) error {
	return k.link(name, func(l *plan.Link) error {
		i := slices.Index(l.Addrs, p)
		if i < 0 {
			return fmt.Errorf("address %s on %q: cannot assign requested address", p, name)
		}
		l.Addrs = slices.Delete(slices.Clone(l.Addrs), i, i+1)
		return nil
	})
}

// Convert implements apply.Uplinks: the uplink joins its bridge, and its
// addresses and host configuration (those u moves) go to the bridge.
func (k *Kernel) Convert(uplink string, u plan.Uplink) error {
	return k.change(func(o *plan.Observed) error {
		l, ok := o.Links[uplink]
		br, okb := o.Links[u.Bridge]
		if !ok || !okb {
			return fmt.Errorf("converting %q to %q: no such device", uplink, u.Bridge)
		}
		if l.Master != u.Bridge {
			l.VLANs = k.joinVLANs()
		}
		l.Master = u.Bridge
		if u.Move != "none" {
			br.Addrs, l.Addrs = l.Addrs, nil
			o.Hosts[u.Bridge] = o.Hosts[uplink]
			delete(o.Hosts, uplink)
		}
		o.Links[uplink], o.Links[u.Bridge] = l, br
		return nil
	})
}

// Release implements apply.Uplinks: the uplink leaves its bridge and gets
// its configuration back.
func (k *Kernel) Release(uplink string, u plan.Uplink) error {
	return k.change(func(o *plan.Observed) error {
		l, ok := o.Links[uplink]
		if !ok {
			return fmt.Errorf("releasing %q: no such device", uplink)
		}
		l.Master, l.Addrs, l.VLANs = "", nil, nil
		for _, a := range u.Config.Addrs {
			l.Addrs = append(l.Addrs, a.Prefix)
		}
		if br, ok := o.Links[u.Bridge]; ok {
			br.Addrs = nil
			o.Links[u.Bridge] = br
		}
		o.Links[uplink] = l
		o.Hosts[uplink] = u.Config
		delete(o.Hosts, u.Bridge)
		return nil
	})
}

// SetSysctl implements apply.Sysctls. A sysctl marked ReadOnly refuses,
// as the kernel refuses a global one outside the initial namespace.
func (k *Kernel) SetSysctl(key, value string) error {
	return k.change(func(o *plan.Observed) error {
		if o.ReadOnly[key] {
			return fmt.Errorf("setting sysctl %s=%s: %w", key, value, fs.ErrPermission)
		}
		o.Sysctls[key] = value
		return nil
	})
}

// DeleteFlows implements apply.Conntrack; it records the flows.
func (k *Kernel) DeleteFlows(flows []plan.Flow) (int, error) {
	err := k.change(func(*plan.Observed) error { return nil })
	k.mu.Lock()
	k.flows = append(k.flows, flows...)
	k.mu.Unlock()
	return 0, err
}

func (k *Kernel) table(fam knftables.Family) *plan.TableState {
	if fam == knftables.BridgeFamily {
		return &k.obs.Bridge
	}
	return &k.obs.Table
}

// NftApply implements apply.Nftables, all of ch or nothing as nft -f.
func (k *Kernel) NftApply(_ context.Context, ch *plan.NftChange) error {
	return k.change(func(o *plan.Observed) error {
		t := k.table(ch.Ruleset.Family)
		switch {
		case ch.Delete:
			if !t.Exists {
				return fmt.Errorf("deleting table %s %s: no such file or directory", ch.Ruleset.Family, plan.TableName)
			}
			*t = plan.TableState{}
		case ch.Rebuild:
			if why, lacks := k.Lacks[plan.FeatureFlowtable]; lacks && len(ch.Ruleset.Flowtables) > 0 {
				// What nft -f says on such a kernel; a plan never gets
				// here, it is refused first.
				return fmt.Errorf("adding flowtable %s: %s", ch.Ruleset.Flowtables[0].Name, why)
			}
			n := plan.TableState{Exists: true, Comment: ch.Version, Chains: map[string][]string{}, Sets: plan.Elements{}}
			for _, ft := range ch.Ruleset.Flowtables {
				if n.Flowtables == nil {
					n.Flowtables = map[string]plan.Flowtable{}
				}
				ft.Devices = slices.Clone(ft.Devices)
				n.Flowtables[ft.Name] = ft
			}
			for _, c := range ch.Ruleset.Chains {
				n.Chains[c.Name] = []string{}
				for _, r := range c.Rules {
					n.Chains[c.Name] = append(n.Chains[c.Name], r.Comment)
				}
			}
			for _, s := range ch.Ruleset.Sets {
				n.Sets[s.Name] = slices.Clone(ch.Elements[s.Name])
			}
			*t = n
		default:
			if !t.Exists {
				return fmt.Errorf("changing elements of table %s %s: no such file or directory", ch.Ruleset.Family, plan.TableName)
			}
			sets := copyElements(t.Sets)
			for set, els := range ch.Del {
				for _, e := range els {
					i := slices.Index(sets[set], e)
					if i < 0 {
						return fmt.Errorf("deleting element %q of set %s: no such file or directory", e, set)
					}
					sets[set] = slices.Delete(sets[set], i, i+1)
				}
			}
			for set, els := range ch.Add {
				if _, ok := sets[set]; !ok {
					return fmt.Errorf("adding to set %s: no such file or directory", set)
				}
				sets[set] = append(sets[set], els...)
			}
			t.Sets = sets
		}
		return nil
	})
}

// NftSnapshot implements apply.Nftables.
func (k *Kernel) NftSnapshot(_ context.Context, fam knftables.Family) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	id := fmt.Sprintf("snapshot-%d", len(k.snapshots))
	k.snapshots[id] = copyTable(*k.table(fam))
	return id, nil
}

// NftRestore implements apply.Nftables.
func (k *Kernel) NftRestore(_ context.Context, fam knftables.Family, snapshot string) error {
	return k.change(func(*plan.Observed) error {
		s, ok := k.snapshots[snapshot]
		if !ok {
			return fmt.Errorf("no snapshot %q", snapshot)
		}
		*k.table(fam) = copyTable(s)
		return nil
	})
}

// Listeners returns Sockets that keep accepts.
func (k *Kernel) Listeners(keep func(proto string, port uint16) bool) ([]plan.Listener, error) {
	var out []plan.Listener
	for _, l := range k.Sockets {
		if keep == nil || keep(l.Proto, l.Port) {
			out = append(out, l)
		}
	}
	return out, nil
}

// LinkState returns one link.
func (k *Kernel) LinkState(name string) (plan.Link, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l, ok := k.obs.Links[name]
	l.Addrs = slices.Clone(l.Addrs)
	return l, ok, nil
}

// DropCounters returns Drops.
// The maps are copies, as the real kernel's answers are new each time.
func (k *Kernel) DropCounters() (map[string]map[string]uint64, error) {
	out := make(map[string]map[string]uint64, len(k.Drops))
	for tap, m := range k.Drops {
		out[tap] = maps.Clone(m)
	}
	return out, nil
}

// OffloadedFlows returns Offloaded for each of subnets.
func (k *Kernel) OffloadedFlows(subnets []netip.Prefix) (map[netip.Prefix]int, error) {
	out := map[netip.Prefix]int{}
	for _, s := range subnets {
		out[s] = k.Offloaded[s]
	}
	return out, nil
}

// DefaultGateway returns Gateway.
func (k *Kernel) DefaultGateway() (netip.Addr, error) { return k.Gateway, nil }

func copyObserved(o *plan.Observed, hosts bool) plan.Observed {
	c := *o
	c.Links = make(map[string]plan.Link, len(o.Links))
	for n, l := range o.Links {
		l.Addrs = slices.Clone(l.Addrs)
		l.VLANs = slices.Clone(l.VLANs)
		c.Links[n] = l
	}
	c.Sysctls = maps.Clone(o.Sysctls)
	c.ReadOnly = maps.Clone(o.ReadOnly)
	c.Table, c.Bridge = copyTable(o.Table), copyTable(o.Bridge)
	c.Listeners = slices.Clone(o.Listeners)
	c.Hosts = nil
	if hosts {
		c.Hosts = map[string]plan.HostConfig{}
		for n, h := range o.Hosts {
			h.Addrs, h.Routes = slices.Clone(h.Addrs), slices.Clone(h.Routes)
			c.Hosts[n] = h
		}
	}
	return c
}

func copyTable(t plan.TableState) plan.TableState {
	c := t
	if t.Chains != nil {
		c.Chains = map[string][]string{}
		for n, r := range t.Chains {
			c.Chains[n] = slices.Clone(r)
		}
	}
	c.Sets = copyElements(t.Sets)
	if t.Flowtables != nil {
		c.Flowtables = map[string]plan.Flowtable{}
		for n, ft := range t.Flowtables {
			ft.Devices = slices.Clone(ft.Devices)
			c.Flowtables[n] = ft
		}
	}
	return c
}

func copyElements(e plan.Elements) plan.Elements {
	if e == nil {
		return nil
	}
	c := plan.Elements{}
	for n, els := range e {
		c[n] = slices.Clone(els)
	}
	return c
}
