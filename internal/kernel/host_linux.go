// Package kernel composes the thin backends (link, nft, sysctl) into the
// Host that apply drives and the planner observes.
package kernel

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"runtime"

	"github.com/vishvananda/netns"
	"sigs.k8s.io/knftables"

	"github.com/kvmnet/kvmnet/internal/baseline"
	"github.com/kvmnet/kvmnet/internal/doctor"
	"github.com/kvmnet/kvmnet/internal/kernel/ct"
	"github.com/kvmnet/kvmnet/internal/kernel/feature"
	"github.com/kvmnet/kvmnet/internal/kernel/link"
	"github.com/kvmnet/kvmnet/internal/kernel/nft"
	"github.com/kvmnet/kvmnet/internal/kernel/snoop"
	"github.com/kvmnet/kvmnet/internal/kernel/sockets"
	"github.com/kvmnet/kvmnet/internal/kernel/sysctl"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// Host is the kernel of the namespace kvmnet runs in.
//
// Netlink sockets are bound to that namespace, but three things act in the
// namespace of the calling thread instead: the nft binary (a child process
// inherits it), /proc/sys/net, and the tun ioctl. Host checks the thread
// before each of them and refuses to act elsewhere: a goroutine that is not
// in the namespace (a test's subtest, say) must never change the machine's
// own network.
type Host struct {
	Link   *link.Handle
	NFT    *nft.NFT
	Sysctl *sysctl.Sysctl
	ns     netns.NsHandle
	// tables keeps the last reading of kvmnet's nftables tables (see
	// nft.Tables): a daemon observes the kernel on every event.
	tables *nft.Tables
}

// Open opens the backends in the calling thread's network namespace (the
// CLI re-executes itself inside --netns before it gets here).
func Open() (*Host, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("opening network namespace handle: %w", err)
	}
	l, err := link.New(netns.None())
	if err != nil {
		ns.Close()
		return nil, err
	}
	n, err := nft.New()
	if err != nil {
		l.Close()
		ns.Close()
		return nil, err
	}
	return &Host{Link: l, NFT: n, Sysctl: sysctl.New(), ns: ns, tables: nft.NewTables(int(ns))}, nil
}

// Close releases the netlink socket.
func (h *Host) Close() {
	h.Link.Close()
	h.ns.Close()
}

// inNS runs fn on a thread that is in the host's namespace, or refuses.
func (h *Host) inNS(what string, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cur, err := netns.Get()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	same := cur.Equal(h.ns)
	cur.Close()
	if !same {
		return fmt.Errorf("%s: refused, the calling thread is not in the network namespace kvmnet was opened in", what)
	}
	return fn()
}

// ObservedSysctls are the sysctls the planner reads.
var ObservedSysctls = []string{plan.SysctlIPForward}

// Observe takes a fresh look at links, addresses, the default route, the
// kvmnet table and the sysctls.
func (h *Host) Observe(ctx context.Context, opt plan.ObserveOptions) (*plan.Observed, error) {
	var links []link.Link
	var hosts map[string]plan.HostConfig
	var err error
	if opt.Hosts {
		links, hosts, err = h.Link.ListWithHosts()
	} else {
		links, err = h.Link.List()
	}
	if err != nil {
		return nil, err
	}
	htbs, err := h.Link.HTBs()
	if err != nil {
		return nil, err
	}
	obs := &plan.Observed{Links: make(map[string]plan.Link, len(links)), Sysctls: map[string]string{}}
	for _, l := range links {
		obs.Links[l.Name] = plan.Link{
			Name: l.Name, Kind: l.Kind, Alias: l.Alias, Master: l.Master,
			MTU: l.MTU, Up: l.Up, HWAddr: l.HWAddr, Addrs: l.Addrs, Isolated: l.Isolated,
			VLANFiltering: l.VLANFiltering, VLANs: l.VLANs, VLANParent: l.VLANParent, VLANID: l.VLANID,
			HTB: htbs[l.Index],
		}
	}
	for name, l := range obs.Links {
		if plan.IsOwnedBridge(l) {
			if l.BridgeNF, err = h.Link.BridgeNF(name); err != nil {
				return nil, err
			}
			obs.Links[name] = l
		}
	}
	obs.Hosts = hosts
	obs.Missing = feature.Missing(opt.Features)
	if obs.DefaultRouteLink, err = h.Link.DefaultRouteLink(); err != nil {
		return nil, err
	}
	tables, err := h.tables.Read(knftables.InetFamily, knftables.BridgeFamily)
	if err != nil {
		return nil, err
	}
	obs.Table, obs.Bridge = tables[0], tables[1]
	err = h.inNS("observing sysctls", func() error {
		for _, k := range ObservedSysctls {
			v, err := h.Sysctl.Get(k)
			if err != nil {
				return err
			}
			obs.Sysctls[k] = v
		}
		// Asked for, when they exist (conntrack's exist once
		// nf_conntrack is loaded), with whether they can be written here.
		for _, k := range opt.Sysctls {
			v, err := h.Sysctl.Get(k)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			} else if err != nil {
				return err
			}
			obs.Sysctls[k] = v
			if w, err := h.Sysctl.Writable(k); err != nil {
				return err
			} else if !w {
				if obs.ReadOnly == nil {
					obs.ReadOnly = map[string]bool{}
				}
				obs.ReadOnly[k] = true
			}
		}
		// Optional: only there when br_netfilter is loaded.
		for _, k := range plan.BridgeNFSysctls {
			if v, err := h.Sysctl.Get(k); err == nil {
				obs.Sysctls[k] = v
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if opt.Memory {
		if obs.MemTotal, err = sysctl.MemTotal(); err != nil {
			return nil, err
		}
	}
	return obs, nil
}

// Listeners lists the host's listening sockets that keep accepts (nil:
// all) and their processes.
func (h *Host) Listeners(keep func(proto string, port uint16) bool) (l []plan.Listener, err error) {
	err = h.inNS("listing sockets", func() error {
		l, err = sockets.List(keep)
		return err
	})
	return l, err
}

// DropCounters returns port security's drops per tap and reason.
func (h *Host) DropCounters() (map[string]map[string]uint64, error) {
	return nft.DropCounters(int(h.ns))
}

// WatchRuleset reports deletions in the namespace's nftables ruleset.
func (h *Host) WatchRuleset(done <-chan struct{}) (<-chan struct{}, error) {
	return nft.WatchDeletions(int(h.ns), done)
}

// WatchLinks reports link and address changes in the host's namespace
// until done is closed (see link.Handle.Watch).
func (h *Host) WatchLinks(done <-chan struct{}) (<-chan link.Event, error) {
	return h.Link.Watch(done)
}

// ReadSysctl reads one sysctl of the host's namespace.
func (h *Host) ReadSysctl(key string) (v string, err error) {
	err = h.inNS("reading sysctl "+key, func() error {
		v, err = h.Sysctl.Get(key)
		return err
	})
	return v, err
}

// Snoop watches the DHCP replies leaving through the ports want accepts
// (see snoop.Watch); its socket is made in the host's namespace.
func (h *Host) Snoop(ctx context.Context, want func(port string) bool, out chan<- snoop.Reply) error {
	return h.inNS("snooping dhcp", func() error { return snoop.Watch(ctx, want, out) })
}

// AddBridge implements apply.Kernel.
func (h *Host) AddBridge(name string, mtu int, alias string) error {
	return h.Link.AddBridge(name, mtu, alias)
}

// AddTap implements apply.Kernel. Taps get vnet_hdr so qemu can use
// virtio-net offloads.
func (h *Host) AddTap(name string, spec plan.TapSpec, alias string) error {
	return h.inNS("creating tap "+name, func() error {
		return h.Link.AddTap(name, link.TapOptions{Queues: spec.Queues, Owner: spec.Owner, VnetHdr: true}, alias)
	})
}

// DeleteLink implements apply.Kernel.
func (h *Host) DeleteLink(name string) error { return h.Link.Delete(name) }

// DeleteLinks implements apply.Kernel.
func (h *Host) DeleteLinks(names []string) []error { return h.Link.DeleteAll(names) }

// SetMaster implements apply.Kernel.
func (h *Host) SetMaster(name, master string) error { return h.Link.SetMaster(name, master) }

// SetHWAddr implements apply.Kernel.
func (h *Host) SetHWAddr(name, mac string) error { return h.Link.SetHWAddr(name, mac) }

// Convert makes uplink a port of u.Bridge and moves the host's
// configuration to the bridge.
func (h *Host) Convert(uplink string, u plan.Uplink) error { return h.Link.Convert(uplink, u) }

// Release gives uplink back its configuration and frees it.
func (h *Host) Release(uplink string, u plan.Uplink) error { return h.Link.Release(uplink, u) }

// SetBridgeNF sets a bridge's nf_call_iptables, ip6tables and arptables.
func (h *Host) SetBridgeNF(name string, on bool) error { return h.Link.SetBridgeNF(name, on) }

// SetIsolated implements apply.Kernel.
func (h *Host) SetIsolated(name string, on bool) error { return h.Link.SetIsolated(name, on) }

// SetMTU implements apply.Kernel.
func (h *Host) SetMTU(name string, mtu int) error { return h.Link.SetMTU(name, mtu) }

// SetAlias implements apply.Kernel.
func (h *Host) SetAlias(name, alias string) error { return h.Link.SetAlias(name, alias) }

// SetUp implements apply.Kernel.
func (h *Host) SetUp(name string, up bool) error { return h.Link.SetUp(name, up) }

// AddAddr implements apply.Kernel.
func (h *Host) AddAddr(name string, p netip.Prefix) error { return h.Link.AddAddr(name, p) }

// DelAddr implements apply.Kernel.
func (h *Host) DelAddr(name string, p netip.Prefix) error { return h.Link.DelAddr(name, p) }

// SetSysctl implements apply.Kernel.
func (h *Host) SetSysctl(key, value string) error {
	if value == "" {
		return fmt.Errorf("setting sysctl %s: no value to set", key)
	}
	return h.inNS("setting sysctl "+key, func() error { return h.Sysctl.Set(key, value) })
}

// DeleteFlows implements apply.Kernel.
func (h *Host) DeleteFlows(flows []plan.Flow) (n int, err error) {
	err = h.inNS("deleting connections", func() error {
		n, err = ct.DeleteFlows(flows)
		return err
	})
	return n, err
}

// OffloadedFlows counts, per subnet, the connections the fast path's
// flowtable carries (see ct.CountOffloaded).
func (h *Host) OffloadedFlows(subnets []netip.Prefix) (n map[netip.Prefix]int, err error) {
	err = h.inNS("counting offloaded connections", func() error {
		n, err = ct.CountOffloaded(subnets)
		return err
	})
	return n, err
}

// NftApply implements apply.Kernel. The generation is read around the
// transaction so that a kept reading of the table can follow an element
// edit instead of being read again (nft.Tables.Committed).
func (h *Host) NftApply(ctx context.Context, ch *plan.NftChange) error {
	// Failing to read a generation only costs the next reading: the
	// generation has moved, so the kept one is not used.
	before, beforeErr := nft.Generation(int(h.ns))
	if err := h.inNS("updating nftables", func() error { return h.NFT.Apply(ctx, ch) }); err != nil {
		return err
	}
	if after, err := nft.Generation(int(h.ns)); err == nil && beforeErr == nil {
		h.tables.Committed(ch.Ruleset.Family, before, after, ch)
	}
	return nil
}

// TableReads is how many times a table was read from the kernel rather
// than taken from the last reading (see nft.Tables).
func (h *Host) TableReads() int { return h.tables.Reads() }

// PrepareNft readies the nft driver of both tables (see nft.NFT.Prepare):
// a daemon does it once at start, off the path of the first edit.
func (h *Host) PrepareNft() {
	_ = h.inNS("preparing nftables", func() error {
		h.NFT.Prepare()
		return nil
	})
}

// NftSnapshot implements apply.Kernel.
func (h *Host) NftSnapshot(ctx context.Context, fam knftables.Family) (snap string, err error) {
	err = h.inNS("saving nftables table", func() error {
		snap, err = h.NFT.Snapshot(ctx, fam)
		return err
	})
	return snap, err
}

// NftRestore implements apply.Kernel.
func (h *Host) NftRestore(ctx context.Context, fam knftables.Family, s string) error {
	return h.inNS("restoring nftables table", func() error { return h.NFT.Restore(ctx, fam, s) })
}

// LinkState returns one link (see link.Handle.Get).
func (h *Host) LinkState(name string) (plan.Link, bool, error) {
	l, ok, err := h.Link.Get(name)
	return plan.Link{Name: l.Name, Kind: l.Kind, Alias: l.Alias, Master: l.Master, MTU: l.MTU, Up: l.Up, HWAddr: l.HWAddr}, ok, err
}

// DefaultGateway is the gateway of the IPv4 default route (see
// link.Handle.DefaultRoute): what apply --confirm probes.
func (h *Host) DefaultGateway() (netip.Addr, error) {
	_, gw, err := h.Link.DefaultRoute()
	return gw, err
}

// ForeignChains implements doctor.Kernel.
func (h *Host) ForeignChains(ctx context.Context, bridges []string) (c []doctor.Chain, err error) {
	err = h.inNS("listing nftables chains", func() error {
		c, err = h.NFT.ForeignChains(ctx, bridges)
		return err
	})
	return c, err
}

// ConntrackStats implements doctor.Kernel: three small files of /proc,
// never a dump of the table.
func (h *Host) ConntrackStats() (s doctor.Conntrack, err error) {
	err = h.inNS("reading conntrack statistics", func() error {
		st, err := ct.ReadStats("/proc")
		s = doctor.Conntrack{Loaded: st.Loaded, Count: st.Count, Max: st.Max, PerCPU: st.PerCPU}
		return err
	})
	return s, err
}

// DeviceMissing implements doctor.Kernel: why the device node at path
// cannot be opened for reading and writing, "" when it can.
func (h *Host) DeviceMissing(path string) string {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err.Error()
	}
	f.Close()
	return ""
}

// LinkStats implements baseline.Kernel.
func (h *Host) LinkStats() (map[string]baseline.LinkStats, error) {
	st, err := h.Link.Stats()
	if err != nil {
		return nil, err
	}
	out := make(map[string]baseline.LinkStats, len(st))
	for name, s := range st {
		out[name] = baseline.LinkStats(s)
	}
	return out, nil
}

// RuleCounters implements baseline.Kernel.
func (h *Host) RuleCounters(ctx context.Context) (c map[string]uint64, err error) {
	err = h.inNS("reading rule counters", func() error {
		c, err = h.NFT.RuleCounters(ctx)
		return err
	})
	return c, err
}

// EthtoolStats implements baseline.Kernel: `ethtool -S` of every link
// that has driver counters (a veth, a NIC; a tap or a bridge has none).
func (h *Host) EthtoolStats() (out map[string]map[string]uint64, err error) {
	links, err := h.Link.List()
	if err != nil {
		return nil, err
	}
	out = map[string]map[string]uint64{}
	err = h.inNS("reading ethtool statistics", func() error {
		for _, l := range links {
			st, err := link.EthtoolStats(l.Name)
			if link.IsNotFound(err) {
				continue // gone since the list
			} else if err != nil {
				return err
			}
			if len(st) > 0 {
				out[l.Name] = st
			}
		}
		return nil
	})
	return out, err
}
