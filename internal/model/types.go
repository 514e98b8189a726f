// Package model holds the types of the file users write (host.yaml), its strict
// parser and its validation. It imports nothing that touches the kernel, so
// `go test ./internal/model/...` runs anywhere.
package model

import (
	"net/netip"
	"slices"
	"time"
)

// Mode is how a network connects its guests.
type Mode string

const (
	// ModeBridged enslaves a physical uplink to a bridge: guests sit on the LAN.
	ModeBridged Mode = "bridged"
	// ModeNAT gives guests a private subnet behind the host, with kvmnet as
	// their gateway, DHCP server and DNS forwarder.
	ModeNAT Mode = "nat"
)

// HostAddress says what happens to the host's own addresses on a bridged
// network's uplink.
type HostAddress string

const (
	// HostAddressKeep moves what the uplink has to the bridge (default).
	HostAddressKeep HostAddress = "keep"
	// HostAddressDHCP makes the bridge take its address from the LAN's DHCP.
	HostAddressDHCP HostAddress = "dhcp"
	// HostAddressStatic moves the addresses once and never renews them.
	HostAddressStatic HostAddress = "static"
	// HostAddressNone leaves the bridge without addresses.
	HostAddressNone HostAddress = "none"
)

// Config is a whole host.yaml: every network of the host and every VM
// interface on them. A Config that came out of Parse has passed validation and
// has its defaults filled in. An empty file gives an empty Config: no
// networks, no VMs, nothing for kvmnet to own.
//
// Paths into a Config, as used by Errorf and in messages, are written like
// the file: "networks[1].subnet", "vms[0].interfaces[2].tap" (indexes count
// from 0, keys are spelled as in the file).
type Config struct {
	// Host holds settings for the whole host (the top-level host: key).
	Host     Host      `yaml:"host"`
	Networks []Network `yaml:"networks"`
	VMs      []VM      `yaml:"vms"`

	// Source is the file name the config was read from, for messages.
	Source string `yaml:"-" json:"-"`
	// Positions records where each path was written in Source (filled by
	// Parse; nil for a Config built in code). It carries no meaning of its
	// own: Positions.Equal always reports true, so comparing two Configs
	// with go-cmp compares only what they say.
	Positions *Positions `yaml:"-" json:"-"`
	// Part, on a part of a file (ForBackend), maps its networks and VMs
	// to their places in the whole; nil for a whole file.
	Part *Part `yaml:"-" json:"-"`
}

// Network is one entry of `networks:`.
type Network struct {
	// Name identifies the network; VM interfaces refer to it. Lowercase
	// letters, digits and '-', at most 15 characters.
	Name string `yaml:"name"`
	// Mode is bridged or nat.
	Mode Mode `yaml:"mode"`
	// Backend names the datapath that carries the network: linux (the
	// default, BackendLinux: bridges, taps and nftables on this host) or
	// another the engine has (ovn, for a network spanning hosts). Parse
	// checks only its spelling; the engine refuses a backend it lacks.
	Backend string `yaml:"backend"`
	// Bridge is the bridge device's name. Default: "kv-" + Name, cut to 15
	// characters (IFNAMSIZ-1). Unique across networks, and different from
	// every uplink and tap.
	Bridge string `yaml:"bridge"`
	// MTU of the bridge. 0 means the kernel's default (1500), or the uplink's
	// for bridged networks.
	MTU int `yaml:"mtu"`

	// Uplink (bridged only, required) is the physical NIC enslaved to
	// Bridge. One uplink serves one bridged network.
	Uplink string `yaml:"uplink"`
	// HostAddress (bridged only): keep, dhcp, static or none. Default keep.
	HostAddress HostAddress `yaml:"hostAddress"`

	// Subnet (nat only, required) is the private IPv4 subnet, written as its
	// network address, e.g. 192.168.100.0/24; /30 or shorter. Subnets of
	// different networks do not overlap.
	Subnet netip.Prefix `yaml:"subnet"`
	// Gateway (nat only) is the host's address on Bridge, inside Subnet.
	// Default: the first host address of Subnet (192.168.100.1).
	Gateway netip.Addr `yaml:"gateway"`
	// DHCP (nat only). Parse always sets it for nat networks. Default: on,
	// the upper half of the subnet without the broadcast address and the
	// gateway (for a /24: .128-.254), 1h leases.
	DHCP *DHCP `yaml:"dhcp"`
	// DNS (nat only). Default: on, domain Name + ".kvm".
	DNS DNS `yaml:"dns"`
	// Egress (nat only) is the interface traffic leaves through, masqueraded.
	// Default (empty): the interface of the default route, resolved at plan
	// time.
	Egress string `yaml:"egress"`
	// Forwards (nat only) are ports of the host forwarded into the network.
	Forwards []Forward `yaml:"forwards"`

	// VLANs (bridged only) makes the bridge VLAN-aware (vlan_filtering 1):
	// each interface's vlan: says which VLANs its port carries. An
	// interface without vlan: sits on the untagged LAN (VLAN 1), as the
	// host's own address on the bridge does; no port is a member of VLAN 1
	// unless it sits there (the kernel's default PVID 1 is taken away from
	// every other port).
	VLANs bool `yaml:"vlans"`
	// UplinkVLANs (with VLANs only) are the VLANs the uplink carries,
	// tagged, besides the untagged LAN. Default: every VLAN an interface
	// of the network uses.
	UplinkVLANs VLANList `yaml:"uplinkVlans"`
	// EgressVLAN (nat only, 1..4094) makes traffic leave through the
	// 802.1Q sub-interface EGRESS.ID of the egress (eth0.200), which
	// kvmnet creates, brings up and deletes with the network. Its
	// addresses and routes are the host's business, as the egress's are.
	EgressVLAN int `yaml:"egressVlan"`
	// Fastpath (nat only) offloads the network's established TCP and UDP
	// flows between its bridge and its egress to an nftables flowtable:
	// their packets skip the host's routing and forward chains. Default:
	// the host's fastpath: (Host.Fastpath), else false. Needs a kernel
	// with nftables flowtables (nf_flow_table_inet).
	Fastpath bool `yaml:"fastpath"`
}

// VLANList is a list of VLAN ids written as numbers and ranges
// ([10, 20-30]); IDs holds them expanded, sorted, without repeats (filled
// by Parse).
type VLANList struct {
	// Text is each entry as written, for Marshal and messages.
	Text []string `yaml:"-"`
	IDs  []int    `yaml:"-"`
}

// PortVLANs are the VLANs of one interface on a VLAN-aware bridge: an
// access port (vlan: 100) has only Untagged; a trunk (vlan: {tagged: [10,
// 20-30], untagged: 100}) has Tagged and, for its native VLAN, Untagged.
type PortVLANs struct {
	// Untagged is the VLAN of the port's untagged frames (its PVID), 0 for
	// none: a trunk without a native VLAN drops untagged frames.
	Untagged int
	// Tagged are the VLANs the port carries tagged.
	Tagged VLANList
	// Access is true when the file wrote a bare number (vlan: 100).
	Access bool
}

// IDs returns every VLAN of p, sorted.
func (p *PortVLANs) IDs() []int {
	if p == nil {
		return nil
	}
	ids := slices.Clone(p.Tagged.IDs)
	if p.Untagged != 0 && !slices.Contains(ids, p.Untagged) {
		ids = append(ids, p.Untagged)
	}
	slices.Sort(ids)
	return ids
}

// Host is the top-level host: section.
type Host struct {
	// Fastpath is the default of every nat network's fastpath:; a
	// network's own fastpath: wins.
	Fastpath bool `yaml:"fastpath"`
	// Conntrack sizes the connection-tracking table and sets its
	// timeouts (see conntrack.go); nil leaves the kernel's as they are.
	Conntrack *Conntrack `yaml:"conntrack"`
}

// DHCP configures the embedded DHCPv4 server of a NAT network.
type DHCP struct {
	// Enabled is false only with `dhcp: {enabled: false}`.
	Enabled *bool `yaml:"enabled"`
	// Range is "FIRST-LAST", both inside the subnet, FIRST <= LAST, not
	// containing the gateway. Default (when on): the upper half of the
	// subnet, e.g. 192.168.100.128-192.168.100.254. Reserved interface
	// addresses may lie inside it; the server must not lease them to others.
	Range string `yaml:"range"`
	// Lease is the lease time, e.g. 1h; at least 1m. Default (when on) 1h.
	Lease Duration `yaml:"lease"`

	// RangeStart and RangeEnd are Range parsed (filled by Parse when on).
	RangeStart netip.Addr `yaml:"-"`
	RangeEnd   netip.Addr `yaml:"-"`
}

// On reports whether DHCP is served.
func (d *DHCP) On() bool { return d != nil && (d.Enabled == nil || *d.Enabled) }

// DNS configures the embedded DNS forwarder of a NAT network.
type DNS struct {
	// Domain: guests resolve each other as NAME.Domain. Default: the
	// network's Name + ".kvm".
	Domain string `yaml:"domain"`
	// Enabled is false only with `dns: {enabled: false}`.
	Enabled *bool `yaml:"enabled"`
}

// On reports whether DNS is served.
func (d DNS) On() bool { return d.Enabled == nil || *d.Enabled }

// Forward is one port forward (DNAT) into a NAT network. Two forwards of one
// network, or of networks with the same egress, may not claim the same
// protocol and port on the same listen address (an empty listen address
// counts as every address).
type Forward struct {
	// Proto is tcp (default) or udp.
	Proto string `yaml:"proto"`
	// Port is "8080" or a range "5000-5010" (1..65535).
	Port string `yaml:"port"`
	// To is VM[:PORT] or IP[:PORT] inside the network; PORT may be a range
	// of the same size as Port. Without PORT, the same port (range) as Port;
	// with a single PORT and a range in Port, the range maps 1:1 starting
	// at PORT. A VM must have an interface on this network; the forward goes
	// to its first one.
	To string `yaml:"to"`
	// From is an allow-list of source IPv4 CIDRs (a bare address means /32);
	// empty allows everyone.
	From []string `yaml:"from"`
	// Listen is the host IPv4 address the forward listens on; default: every
	// address of the egress interface.
	Listen string `yaml:"listen"`
	// RateLimit caps new connections per source, e.g. "50/second" (per
	// second or minute; see ParseRateLimit).
	RateLimit string `yaml:"rateLimit"`
	// Force accepts a forward on a port the host itself listens on.
	Force bool `yaml:"force"`

	// Parsed forms (filled by Parse).

	// PortFirst and PortLast are Port; equal for a single port.
	PortFirst, PortLast uint16 `yaml:"-"`
	// ToVM is the target VM's name when To names a VM; ToAddr is the target
	// address when To is an address. Exactly one of them is set: for a VM
	// target, its address is that of its interface on this network (a
	// reservation, or its lease when it has none).
	ToVM   string     `yaml:"-"`
	ToAddr netip.Addr `yaml:"-"`
	// ToPortFirst is the first target port; the target range is
	// ToPortFirst .. ToPortFirst+(PortLast-PortFirst). Default PortFirst.
	ToPortFirst uint16 `yaml:"-"`
	// FromPrefixes is From parsed and masked.
	FromPrefixes []netip.Prefix `yaml:"-"`
	// ListenAddr is Listen parsed; invalid (zero) when Listen is empty.
	ListenAddr netip.Addr `yaml:"-"`
}

// VM is one entry of `vms:`.
type VM struct {
	// Name of the guest; it is also its DNS name on NAT networks. Same
	// syntax as a network name, unique across VMs.
	Name       string      `yaml:"name"`
	Interfaces []Interface `yaml:"interfaces"`
}

// Interface is one NIC of a VM.
type Interface struct {
	// Network is the Name of the network it sits on. A VM may have several
	// interfaces on one network.
	Network string `yaml:"network"`
	// MAC of the guest's NIC, e.g. 52:54:00:00:00:10. Required; unicast;
	// unique across all interfaces.
	MAC string `yaml:"mac"`
	// IP (nat only) is a DHCP reservation and the anti-spoofing binding:
	// inside the subnet, not its network, broadcast or gateway address,
	// unique.
	IP netip.Addr `yaml:"ip"`
	// Tap is the host-side device name (≤ 15 characters), unique across all
	// interfaces and different from every bridge and uplink. Default: VM
	// name + "-" + index of the interface in the VM (web1-0); when that is
	// longer than 15 characters the VM name part is cut, so the index
	// stays.
	Tap string `yaml:"tap"`
	// CreateTap makes kvmnet create a persistent tap device; otherwise an
	// existing link of that name is adopted when it exists or appears.
	CreateTap bool `yaml:"createTap"`
	// Queues (CreateTap only, 0..256): >1 makes a multi-queue tap.
	Queues int `yaml:"queues"`
	// Owner (CreateTap only): user name or uid allowed to open the tap.
	Owner string `yaml:"owner"`
	// Security of the port; spoofguard defaults to on.
	Security Security `yaml:"security"`
	// QoS rate limits.
	QoS QoS `yaml:"qos"`
	// VLAN (on a network with vlans: true) is the port's VLANs; nil: the
	// untagged LAN (VLAN 1).
	VLAN *PortVLANs `yaml:"vlan"`

	// HWAddr is MAC normalised to lowercase, colon-separated (filled by
	// Parse): 52:54:00:ab:cd:ef.
	HWAddr string `yaml:"-"`
}

// Security is per-port protection.
type Security struct {
	// Spoofguard drops frames whose source MAC (and, with an IP, source
	// address) is not the interface's. Default on.
	Spoofguard *bool `yaml:"spoofguard"`
	// Isolated ports talk to the gateway and the outside, not to other
	// guests of the network.
	Isolated bool `yaml:"isolated"`
	// MaxConnections caps tracked connections of the port; 0 means no cap.
	MaxConnections int `yaml:"maxConnections"`
	// BroadcastLimit caps broadcast frames from the port, e.g. "100/second"
	// (see ParseRateLimit). Empty means no cap.
	BroadcastLimit string `yaml:"broadcastLimit"`
	// NewConnections caps the new connections (conntrack entries) the port
	// opens through the host, per address, e.g. "200/second" (see
	// ParseRateLimit): under its MaxConnections cap a guest can still
	// fill the host's conntrack table with closed connections waiting out
	// their timeout. Empty means no cap.
	NewConnections string `yaml:"newConnections"`
}

// SpoofguardOn reports whether spoofguard applies (default on).
func (s Security) SpoofguardOn() bool { return s.Spoofguard == nil || *s.Spoofguard }

// QoS is per-port traffic shaping, one Shape per direction, named from
// the guest as libvirt and Incus name them. An empty Shape means
// unlimited.
type QoS struct {
	// Egress limits what the guest sends.
	Egress Shape `yaml:"egress"`
	// Ingress limits what the guest receives (shaped with htb on the
	// tap, whose egress it is).
	Ingress Shape `yaml:"ingress"`
}

// Shape is the limit of one direction, in tc syntax: `ingress: 100mbit`
// (a rate alone) or `ingress: {rate: 100mbit, ceil: 200mbit, burst:
// 256kb}`.
type Shape struct {
	// Rate is the guaranteed rate (see ParseRate).
	Rate string `yaml:"rate"`
	// Ceil is the rate the port may borrow up to; empty means Rate.
	Ceil string `yaml:"ceil"`
	// Burst is how many bytes may go at once above the rate (see
	// ParseSize); empty lets kvmnet choose (see DefaultBurst).
	Burst string `yaml:"burst"`
	// Mode is "shape" (the default: queue and pace) or "police" (drop
	// what is above the rate; egress only).
	Mode string `yaml:"mode"`
}

// IsZero reports whether s sets nothing.
func (s Shape) IsZero() bool { return s == Shape{} }

// rateOnly reports whether s is written as a rate alone.
func (s Shape) rateOnly() bool { return s.Ceil == "" && s.Burst == "" && s.Mode == "" }

// Duration is a time.Duration written as "1h", "30m".
type Duration struct{ time.Duration }

// String writes d the way a user would: "1h", "1h30m", "45s".
func (d Duration) String() string { return shortDuration(d.Duration) }

// Port is one VM interface on a network, as returned by Config.Ports.
type Port struct {
	// VM is the name of the VM the interface belongs to.
	VM string
	// Index is the interface's index in the VM's interfaces.
	Index int
	// Iface points into the Config.
	Iface *Interface
}
