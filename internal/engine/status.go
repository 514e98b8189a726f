package engine

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

// NetworkStatus is one row of `kvmnet get networks`.
type NetworkStatus struct {
	Name string `json:"name"`
	Mode string `json:"mode"`
	// Backend carries the network (linux: this host's bridges and
	// nftables).
	Backend string `json:"backend"`
	Bridge  string `json:"bridge"`
	Subnet  string `json:"subnet,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	Egress  string `json:"egress,omitempty"`
	// State is "up", "down" or "missing" (the bridge does not exist).
	State string `json:"state"`
	// Ports configured and attached to the bridge.
	Ports    int `json:"ports"`
	Attached int `json:"attached"`
	Leases   int `json:"leases"`
	// Uplink is a bridged network's physical port, HostAddrs the host's
	// own addresses on its bridge.
	Uplink    string   `json:"uplink,omitempty"`
	HostAddrs []string `json:"hostAddrs,omitempty"`
	// Fastpath says whether the network's established flows are offloaded
	// to kvmnet's flowtable (fastpath: true); Offloaded counts the
	// connections it carries now.
	Fastpath  bool `json:"fastpath,omitempty"`
	Offloaded int  `json:"offloadedFlows,omitempty"`
	// BridgeNF says whether br_netfilter sends the bridge's traffic
	// through iptables: "off", "on" (the bridge's own nf_call_* or the
	// global sysctls), or "" when the kernel has no bridge netfilter.
	BridgeNF string `json:"bridgeNetfilter,omitempty"`
	// Notes are what the admin should know about the network.
	Notes []string `json:"notes,omitempty"`
}

// PortStatus is one row of `kvmnet get vms`.
type PortStatus struct {
	VM      string `json:"vm"`
	Network string `json:"network"`
	Tap     string `json:"tap"`
	MAC     string `json:"mac"`
	IP      string `json:"ip,omitempty"`
	// State is "attached", "waiting" (the tap does not exist yet) or
	// "detached" (it exists but is not on the network's bridge).
	State string `json:"state"`
	Lease string `json:"lease,omitempty"`
	// Spoofguard and Isolated are the port's security settings.
	Spoofguard bool `json:"spoofguard"`
	Isolated   bool `json:"isolated"`
	// VLAN is the port's VLANs as the kernel has them, on a VLAN-aware
	// bridge: "100" (access), "10,20-22 native 100" (trunk).
	VLAN string `json:"vlan,omitempty"`
	// Ingress is the shaping of traffic to the guest as the kernel has
	// it on the tap, rate and ceil: "50mbit/200mbit"; "" for none.
	Ingress string `json:"ingress,omitempty"`
	// Drops counts frames port security dropped, by reason.
	Drops map[string]uint64 `json:"drops,omitempty"`
}

// ForwardStatus is one row of `kvmnet get forwards`.
type ForwardStatus struct {
	Network string   `json:"network"`
	Proto   string   `json:"proto"`
	Port    string   `json:"port"`
	To      string   `json:"to"`
	From    []string `json:"from,omitempty"`
	// Listen are the host addresses the forward is in place on.
	Listen []string `json:"listen"`
	// State is "active" or "waiting" (no address to listen on yet).
	State     string `json:"state"`
	RateLimit string `json:"rateLimit,omitempty"`
}

// Status is what `kvmnet get` shows.
type Status struct {
	Revision uint64          `json:"revision"`
	Networks []NetworkStatus `json:"networks"`
	VMs      []PortStatus    `json:"vms"`
	Forwards []ForwardStatus `json:"forwards"`
	Leases   []store.Lease   `json:"leases"`
	// Pools is filled by the daemon, which runs the DHCP servers.
	Pools []PoolStatus `json:"pools,omitempty"`
	// Notes are what the admin should know about the host as a whole.
	Notes []string `json:"notes,omitempty"`
}

// PoolStatus is the use of one network's DHCP pool.
type PoolStatus struct {
	Network  string `json:"network"`
	Size     int    `json:"size"`
	Used     int    `json:"used"`
	Free     int    `json:"free"`
	Reserved int    `json:"reserved"`
}

// Status joins the desired state, a fresh observation and the leases.
func (e *Engine) Status(ctx context.Context) (*Status, error) {
	whole, rev, err := e.Desired()
	if err != nil {
		return nil, err
	}
	cfg := e.linuxPart(whole)
	obs, err := e.Kernel.Observe(ctx, plan.ObserveOptions{Hosts: len(plan.UplinkBridges(cfg)) > 0})
	if err != nil {
		return nil, err
	}
	leases, err := e.Store.Leases("")
	if err != nil {
		return nil, err
	}
	st := BuildStatus(cfg, rev, obs, leases, time.Now())
	drops, err := e.Kernel.DropCounters()
	if err != nil {
		return nil, err
	}
	for i := range st.VMs {
		st.VMs[i].Drops = drops[st.VMs[i].Tap]
	}
	if err := e.offloaded(cfg, st); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(e.Backends)) {
		nets, err := e.Backends[name].Networks(ctx, whole.ForBackend(name))
		if err != nil {
			return nil, fmt.Errorf("reading the networks of backend %q: %w", name, err)
		}
		for _, n := range nets {
			st.Networks = append(st.Networks, NetworkStatus{Name: n.Name, Mode: n.Mode, Backend: name, State: n.State,
				Ports: n.Ports, Attached: n.Attached, Notes: n.Notes})
		}
	}
	return st, nil
}

// BuildStatus is the pure part of Status.
func BuildStatus(cfg *model.Config, rev uint64, obs *plan.Observed, leases []store.Lease, now time.Time) *Status {
	st := &Status{Revision: rev, Networks: []NetworkStatus{}, VMs: []PortStatus{}, Forwards: []ForwardStatus{}, Leases: []store.Lease{}}
	// Which listen addresses each proto/port is in place on, from dnat4.
	inPlace := map[string][]string{}
	for _, e := range obs.Table.Sets[plan.MapDNAT] {
		// LISTEN . PROTO . PORT : TARGET . PORT
		if parts := e.Key(); len(parts) == 3 {
			inPlace[parts[1]+"/"+parts[2]] = append(inPlace[parts[1]+"/"+parts[2]], parts[0])
		}
	}
	active := map[string]store.Lease{} // network/mac
	for _, l := range leases {
		if l.Expiry.After(now) {
			active[l.Network+"/"+l.MAC] = l
			st.Leases = append(st.Leases, l)
		}
	}
	var globalNF []string
	for _, k := range plan.BridgeNFSysctls {
		if obs.Sysctls[k] == "1" {
			globalNF = append(globalNF, strings.TrimPrefix(k, "net.bridge.bridge-nf-call-"))
		}
	}
	if len(globalNF) > 0 && len(cfg.Networks) > 0 {
		st.Notes = append(st.Notes, fmt.Sprintf("br_netfilter is loaded and net.bridge.bridge-nf-call-{%s}=1: every bridge's frames go through %s, whatever a bridge's own nf_call_* says (kvmnet turns its bridges' off); set them to 0 (sysctl -w) unless another tool needs them",
			strings.Join(globalNF, ","), strings.Join(globalNF, ", ")))
	}
	uplinkBridge := plan.UplinkBridges(cfg)
	for _, n := range cfg.Networks {
		ns := NetworkStatus{Name: n.Name, Mode: string(n.Mode), Backend: model.BackendLinux, Bridge: n.Bridge, Egress: n.Egress, State: "missing"}
		if n.Mode == model.ModeNAT {
			ns.Subnet, ns.Gateway = n.Subnet.String(), n.Gateway.String()
			ns.Fastpath = n.Fastpath
			ns.Egress, _ = plan.Egress(&n, obs.DefaultRouteLink, uplinkBridge)
		}
		if l, ok := obs.Links[n.Bridge]; ok {
			ns.State = "down"
			if l.Up {
				ns.State = "up"
			}
			ns.BridgeNF = l.BridgeNF
		}
		if n.Mode == model.ModeBridged {
			ns.Uplink, ns.Egress = n.Uplink, n.Uplink
			for _, a := range obs.Hosts[n.Bridge].Addrs {
				ns.HostAddrs = append(ns.HostAddrs, a.Prefix.String())
			}
			if l, ok := obs.Links[n.Uplink]; !ok {
				ns.Notes = append(ns.Notes, fmt.Sprintf("uplink %s does not exist", n.Uplink))
			} else if l.Master != n.Bridge {
				ns.Notes = append(ns.Notes, fmt.Sprintf("uplink %s is not a port of %s", n.Uplink, n.Bridge))
			}
		}
		if len(globalNF) > 0 && ns.State != "missing" {
			ns.BridgeNF = "on"
		}
		for _, p := range cfg.Ports(n.Name) {
			ns.Ports++
			ps := PortStatus{VM: p.VM, Network: n.Name, Tap: p.Iface.Tap, MAC: p.Iface.HWAddr, State: "waiting",
				Spoofguard: p.Iface.Security.SpoofguardOn(), Isolated: p.Iface.Security.Isolated}
			if p.Iface.IP.IsValid() {
				ps.IP = p.Iface.IP.String()
			}
			if l, ok := obs.Links[p.Iface.Tap]; ok {
				ps.State = "detached"
				if l.Master == n.Bridge {
					ps.State = "attached"
					ns.Attached++
					if obs.Links[n.Bridge].VLANFiltering {
						ps.VLAN = plan.FormatVLANs(l.VLANs)
					}
				}
				if h := l.HTB; h != nil {
					ps.Ingress = plan.FormatRate(h.Rate) + "/" + plan.FormatRate(h.Ceil)
				}
			}
			if l, ok := active[n.Name+"/"+p.Iface.HWAddr]; ok {
				ps.IP = l.IP.String()
				ps.Lease = "until " + l.Expiry.UTC().Format(time.RFC3339)
			}
			st.VMs = append(st.VMs, ps)
		}
		for _, l := range st.Leases {
			if l.Network == n.Name {
				ns.Leases++
			}
		}
		st.Networks = append(st.Networks, ns)
		for _, f := range n.Forwards {
			fs := ForwardStatus{Network: n.Name, Proto: f.Proto, Port: f.Port, To: f.To, From: f.From, RateLimit: f.RateLimit,
				Listen: inPlace[fmt.Sprintf("%s/%d", f.Proto, f.PortFirst)], State: "waiting"}
			if len(fs.Listen) > 0 {
				fs.State = "active"
			} else {
				fs.Listen = []string{}
			}
			st.Forwards = append(st.Forwards, fs)
		}
	}
	sort.SliceStable(st.VMs, func(i, j int) bool { return st.VMs[i].VM < st.VMs[j].VM })
	return st
}

// offloaded fills the offloaded-flow counts of fast-path networks: one
// conntrack dump, only when some network has the fast path.
func (e *Engine) offloaded(cfg *model.Config, st *Status) error {
	var subnets []netip.Prefix
	for _, n := range cfg.Networks {
		if n.Mode == model.ModeNAT && n.Fastpath {
			subnets = append(subnets, n.Subnet.Masked())
		}
	}
	if len(subnets) == 0 {
		return nil
	}
	counts, err := e.Kernel.OffloadedFlows(subnets)
	if err != nil {
		return err
	}
	for i, ns := range st.Networks {
		if !ns.Fastpath {
			continue
		}
		if n := cfg.Network(ns.Name); n != nil {
			st.Networks[i].Offloaded = counts[n.Subnet.Masked()]
		}
	}
	return nil
}
