package plan

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
)

// The steps of links and ports: kvmnet's bridges and taps, and what makes
// a link a port of a bridge.

// AddBridge creates a bridge, marked as kvmnet's by its alias, with the
// bridge's own netfilter calls off; HWAddr, when set, is its MAC (a
// bridged network's bridge takes its uplink's).
type AddBridge struct {
	Name   string
	MTU    int
	Alias  string
	HWAddr string
}

func (s AddBridge) Op() Op       { return OpAddBridge }
func (s AddBridge) Link() string { return s.Name }

func (s AddBridge) String() string {
	c := fmt.Sprintf("ip link add %s type bridge", s.Name)
	if s.MTU != 0 {
		c += fmt.Sprintf(" mtu %d", s.MTU)
	}
	if s.HWAddr != "" {
		c += " address " + s.HWAddr
	}
	return c + fmt.Sprintf(" && ip link set %s alias %q", s.Name, s.Alias) +
		fmt.Sprintf(" && ip link set %s type bridge nf_call_iptables 0 nf_call_ip6tables 0 nf_call_arptables 0", s.Name)
}

func (s AddBridge) Do(_ context.Context, k Kernel, h Hooks) (Undo, error) {
	if err := beforeCreate(h, s.Name); err != nil {
		return nil, err
	}
	undo := func() error { return k.DeleteLink(s.Name) }
	if err := k.AddBridge(s.Name, s.MTU, s.Alias); err != nil {
		return nil, err
	}
	if s.HWAddr != "" {
		if err := k.SetHWAddr(s.Name, s.HWAddr); err != nil {
			return nil, errors.Join(err, undo())
		}
	}
	return undo, nil
}

func beforeCreate(h Hooks, name string) error {
	if h.BeforeCreate == nil {
		return nil
	}
	return h.BeforeCreate(name)
}

// BridgeNFOff turns a bridge's own nf_call_iptables, ip6tables and
// arptables off (a bridge kvmnet adopted with them on).
type BridgeNFOff struct{ Name string }

func (s BridgeNFOff) Op() Op       { return OpBridgeNF }
func (s BridgeNFOff) Link() string { return s.Name }
func (s BridgeNFOff) String() string {
	return fmt.Sprintf("ip link set %s type bridge nf_call_iptables 0 nf_call_ip6tables 0 nf_call_arptables 0", s.Name)
}

func (s BridgeNFOff) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	return func() error { return k.SetBridgeNF(s.Name, true) }, k.SetBridgeNF(s.Name, false)
}

// AddTap creates a tap (vnet_hdr; multi_queue with more than one queue),
// marked as kvmnet's by its alias.
type AddTap struct {
	Name  string
	Spec  TapSpec
	Alias string
}

func (s AddTap) Op() Op       { return OpAddTap }
func (s AddTap) Link() string { return s.Name }

func (s AddTap) String() string {
	c := fmt.Sprintf("ip tuntap add dev %s mode tap vnet_hdr", s.Name)
	if s.Spec.Queues > 1 {
		c += " multi_queue"
	}
	if s.Spec.Owner != "" {
		c += " user " + s.Spec.Owner
	}
	return c + fmt.Sprintf(" && ip link set %s alias %q", s.Name, s.Alias)
}

func (s AddTap) Do(_ context.Context, k Kernel, h Hooks) (Undo, error) {
	if err := beforeCreate(h, s.Name); err != nil {
		return nil, err
	}
	return func() error { return k.DeleteLink(s.Name) }, k.AddTap(s.Name, s.Spec, s.Alias)
}

// SetMTU changes a link's MTU from Prev.
type SetMTU struct {
	Name      string
	MTU, Prev int
}

func (s SetMTU) Op() Op         { return OpSetMTU }
func (s SetMTU) Link() string   { return s.Name }
func (s SetMTU) String() string { return fmt.Sprintf("ip link set %s mtu %d", s.Name, s.MTU) }
func (s SetMTU) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	return func() error { return k.SetMTU(s.Name, s.Prev) }, k.SetMTU(s.Name, s.MTU)
}

// BridgeMAC is the MAC of nat network network's bridge: fixed, so the
// guests' gateway keeps its address. A bridge whose address nobody set
// takes the lowest of its ports' MACs, so it changed whenever a VM with
// a lower tap MAC joined, and every guest lost its gateway until its ARP
// entry was renewed. Locally administered and unicast (02:...), from the
// network's name, so it is the same on every host and after a rebuild.
func BridgeMAC(network string) string {
	h := sha256.Sum256([]byte("kvmnet bridge " + network))
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4])
}

// SetHWAddr changes a link's MAC from Prev.
type SetHWAddr struct {
	Name, MAC, Prev string
}

func (s SetHWAddr) Op() Op         { return OpSetHWAddr }
func (s SetHWAddr) Link() string   { return s.Name }
func (s SetHWAddr) String() string { return fmt.Sprintf("ip link set %s address %s", s.Name, s.MAC) }
func (s SetHWAddr) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	return func() error { return k.SetHWAddr(s.Name, s.Prev) }, k.SetHWAddr(s.Name, s.MAC)
}

// SetAlias changes a link's alias (kvmnet's mark) from Prev.
type SetAlias struct {
	Name, Alias, Prev string
}

func (s SetAlias) Op() Op         { return OpSetAlias }
func (s SetAlias) Link() string   { return s.Name }
func (s SetAlias) String() string { return fmt.Sprintf("ip link set %s alias %q", s.Name, s.Alias) }
func (s SetAlias) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	return func() error { return k.SetAlias(s.Name, s.Prev) }, k.SetAlias(s.Name, s.Alias)
}

// SetUp brings a link up (or down).
type SetUp struct {
	Name string
	Up   bool
}

func (s SetUp) Op() Op       { return OpSetUp }
func (s SetUp) Link() string { return s.Name }
func (s SetUp) String() string {
	if s.Up {
		return fmt.Sprintf("ip link set %s up", s.Name)
	}
	return fmt.Sprintf("ip link set %s down", s.Name)
}

func (s SetUp) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	return func() error { return k.SetUp(s.Name, !s.Up) }, k.SetUp(s.Name, s.Up)
}

// SetMaster makes a link a port of Master ("" sets it free) from Prev.
type SetMaster struct {
	Name, Master, Prev string
}

func (s SetMaster) Op() Op       { return OpSetMaster }
func (s SetMaster) Link() string { return s.Name }
func (s SetMaster) String() string {
	if s.Master == "" {
		return fmt.Sprintf("ip link set %s nomaster", s.Name)
	}
	return fmt.Sprintf("ip link set %s master %s", s.Name, s.Master)
}

func (s SetMaster) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	return func() error { return k.SetMaster(s.Name, s.Prev) }, k.SetMaster(s.Name, s.Master)
}

// SetIsolated sets a bridge port's isolated flag.
type SetIsolated struct {
	Name string
	On   bool
}

func (s SetIsolated) Op() Op       { return OpIsolate }
func (s SetIsolated) Link() string { return s.Name }
func (s SetIsolated) String() string {
	if s.On {
		return fmt.Sprintf("bridge link set dev %s isolated on", s.Name)
	}
	return fmt.Sprintf("bridge link set dev %s isolated off", s.Name)
}

func (s SetIsolated) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	return func() error { return k.SetIsolated(s.Name, !s.On) }, k.SetIsolated(s.Name, s.On)
}

// DelLink deletes a link kvmnet no longer needs. Gone is the link as it
// was, to recreate it on undo. Apply runs a run of deletions at once
// (Kernel.DeleteLinks) and undoes each with Recreate.
type DelLink struct{ Gone Link }

func (s DelLink) Op() Op         { return OpDelLink }
func (s DelLink) Link() string   { return s.Gone.Name }
func (s DelLink) String() string { return fmt.Sprintf("ip link del %s", s.Gone.Name) }
func (s DelLink) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	return func() error { return s.Recreate(k, nil) }, k.DeleteLink(s.Gone.Name)
}

// Recreate brings the deleted link back. A bridge gets back its ports,
// except those deleted with it (in deleted): their own undo recreates them
// on it, after this one (taps are deleted before bridges, so undone after
// them).
func (s DelLink) Recreate(k Kernel, deleted map[string]bool) error {
	l := s.Gone
	var err error
	switch l.Kind {
	case "bridge":
		err = k.AddBridge(l.Name, l.MTU, l.Alias)
	case "vlan":
		err = k.AddVLANLink(l.Name, l.VLANParent, l.VLANID, l.Alias)
	default:
		err = k.AddTap(l.Name, TapSpec{}, l.Alias)
	}
	if err != nil {
		return err
	}
	var errs []error
	if l.HWAddr != "" {
		errs = append(errs, k.SetHWAddr(l.Name, l.HWAddr))
	}
	if l.MTU != 0 && l.Kind != "bridge" {
		errs = append(errs, k.SetMTU(l.Name, l.MTU))
	}
	for _, p := range l.Addrs {
		errs = append(errs, k.AddAddr(l.Name, p))
	}
	if l.Master != "" {
		errs = append(errs, k.SetMaster(l.Name, l.Master))
	}
	if l.Up {
		errs = append(errs, k.SetUp(l.Name, true))
	}
	for _, p := range l.Ports {
		if deleted[p.Name] {
			continue
		}
		errs = append(errs, k.SetMaster(p.Name, l.Name))
		if p.Isolated {
			errs = append(errs, k.SetIsolated(p.Name, true))
		}
		if l.VLANFiltering {
			errs = append(errs, k.SetPortVLANs(p.Name, false, defaultVLANs(), p.VLANs))
		}
	}
	if l.VLANFiltering {
		errs = append(errs, k.SetVLANFiltering(l.Name, true), k.SetPortVLANs(l.Name, true, defaultVLANs(), l.VLANs))
	}
	return errors.Join(errs...)
}
