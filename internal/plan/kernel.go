package plan

import (
	"context"
	"net/netip"

	"sigs.k8s.io/knftables"
)

// Kernel is what a plan's steps run on, one contract per concern. The
// real one is kernel.Host; package kernel/fake keeps the same state in
// memory, and apply/applytest wraps either to inject failures. A step
// uses only the contracts of its own concern.
type Kernel interface {
	Links
	Addresses
	Uplinks
	Sysctls
	Nftables
	Conntrack
	VLANs
	Tc
}

// Links are network devices: kvmnet's bridges and taps, and the ports of
// its bridges.
type Links interface {
	AddBridge(name string, mtu int, alias string) error
	AddTap(name string, spec TapSpec, alias string) error
	DeleteLink(name string) error
	// DeleteLinks deletes many links at once (concurrently), returning one
	// error per name.
	DeleteLinks(names []string) []error
	SetMaster(name, master string) error
	SetMTU(name string, mtu int) error
	SetHWAddr(name, mac string) error
	SetAlias(name, alias string) error
	SetUp(name string, up bool) error
	// SetIsolated is the bridge port flag (bridge link set isolated).
	SetIsolated(name string, on bool) error
	// SetBridgeNF sets a bridge's own nf_call_iptables, ip6tables and
	// arptables.
	SetBridgeNF(name string, on bool) error
}

// Addresses are the IP addresses of links.
type Addresses interface {
	AddAddr(name string, p netip.Prefix) error
	DelAddr(name string, p netip.Prefix) error
}

// Uplinks move a host's configuration between an uplink and its bridge.
type Uplinks interface {
	// Convert makes an uplink a bridge port and moves the host's
	// configuration to the bridge; Release undoes it.
	Convert(uplink string, u Uplink) error
	Release(uplink string, u Uplink) error
}

// Sysctls are /proc/sys settings.
type Sysctls interface {
	SetSysctl(key, value string) error
}

// Nftables are kvmnet's tables, changed in one transaction each.
type Nftables interface {
	NftApply(ctx context.Context, ch *NftChange) error
	// NftSnapshot returns what NftRestore needs to put the table of fam
	// back as it is now (nothing, when it does not exist).
	NftSnapshot(ctx context.Context, fam knftables.Family) (string, error)
	NftRestore(ctx context.Context, fam knftables.Family, snapshot string) error
}

// Conntrack is the connection tracking table.
type Conntrack interface {
	// DeleteFlows cuts the tracked connections to flows, returning how
	// many it cut.
	DeleteFlows(flows []Flow) (int, error)
}

// Tc is traffic control: kvmnet's htb qdisc on a link (see HTB).
type Tc interface {
	// SetHTB makes h the link's root qdisc and its class, replacing the
	// root qdisc the link had.
	SetHTB(name string, h HTB) error
	// DelHTB deletes kvmnet's root qdisc of a link; the kernel puts its
	// default qdisc back.
	DelHTB(name string) error
}

// Hooks let the caller persist what must survive a crash; steps call them
// before they change what needs it.
type Hooks struct {
	// BeforeSysctl is called with the value a sysctl has before kvmnet
	// first changes it, so destroy can put it back even after kill -9.
	BeforeSysctl func(key, prev string) error
	// BeforeCreate is called with the name of a link about to be created,
	// so that an apply killed between creating and marking it can claim
	// it later (Options.Claim).
	BeforeCreate func(name string) error
	// BeforeConvert is called with an uplink's configuration before it
	// is first moved to a bridge, so destroy can give it back even after
	// kill -9.
	BeforeConvert func(uplink string, u Uplink) error
}

// Undo takes one done step back.
type Undo func() error
