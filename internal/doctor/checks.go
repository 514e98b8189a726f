package doctor

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

// checks run in this order; Run sorts their findings by severity.
var checks = []func(*Facts) []Finding{
	checkDesired, checkIPForward, checkRPFilter, checkBridgeNF, checkForeignForward, checkForeignMasquerade,
	checkMTU, checkConntrack, checkTimeouts, checkPools, checkStaleLeases, checkTaps, checkFeatures, checkDaemon,
}

// Thresholds of the conntrack table's fill and of DHCP pools.
const (
	ctWarnAt     = 0.80
	ctCriticalAt = 0.95
	// poolWarnFree: a pool with less than this share free warns.
	poolWarnFree = 0.10
	// establishedTooLong: an established timeout above a day keeps the
	// entries of vanished guests for days (the kernel's is 5).
	establishedTooLong = 24 * time.Hour
)

// natNetworks returns the NAT networks of the desired state.
func natNetworks(f *Facts) []model.Network {
	if f.Config == nil {
		return nil
	}
	var out []model.Network
	for _, n := range f.Config.Networks {
		if n.Mode == model.ModeNAT {
			out = append(out, n)
		}
	}
	return out
}

func ok(check, subject, summary string, evidence ...string) Finding {
	return Finding{Check: check, Severity: OK, Subject: subject, Summary: summary, Evidence: evidence}
}

func checkDesired(f *Facts) []Finding {
	if f.Config == nil || len(f.Config.Networks) == 0 {
		return []Finding{{Check: "desired-state", Severity: Info, Summary: "kvmnet manages no network here yet: the checks of networks, taps and leases have nothing to look at",
			Fix: "kvmnet apply -f host.yaml"}}
	}
	return []Finding{ok("desired-state", "", fmt.Sprintf("%d networks, %d VMs", len(f.Config.Networks), len(f.Config.VMs)))}
}

func checkIPForward(f *Facts) []Finding {
	nat := natNetworks(f)
	v := f.Obs.Sysctls[plan.SysctlIPForward]
	ev := plan.SysctlIPForward + " = " + v
	switch {
	case len(nat) == 0:
		return []Finding{ok("ip-forward", "", "no NAT network needs forwarding", ev)}
	case v != "1":
		return []Finding{{Check: "ip-forward", Severity: Critical, Summary: fmt.Sprintf("forwarding is off: guests of %s reach nothing beyond their gateway", names(nat)),
			Evidence: []string{ev},
			Fix:      "kvmnet apply -f host.yaml (or sysctl -w net.ipv4.ip_forward=1; the daemon repairs it within 2 s when it runs); then find what turned it off (grep -r ip_forward /etc/sysctl.conf /etc/sysctl.d)"}}
	}
	return []Finding{ok("ip-forward", "", "forwarding is on", ev)}
}

func names(ns []model.Network) string {
	var s []string
	for _, n := range ns {
		s = append(s, n.Name)
	}
	return strings.Join(s, ", ")
}

// checkRPFilter: strict reverse-path filtering (1) drops a packet whose
// reply would leave by another interface: fine on a host with one
// uplink, broken by asymmetric routes (a second uplink, policy routing).
// The kernel uses the larger of "all" and the interface's value.
func checkRPFilter(f *Facts) []Finding {
	if f.Config == nil {
		return nil
	}
	all := f.Obs.Sysctls[rpFilter("all")]
	uplinks := 0
	for _, l := range f.Obs.Links {
		if l.Kind != "bridge" && l.Name != "lo" && len(l.Addrs) > 0 && !plan.IsOwnedBridge(l) {
			uplinks++
		}
	}
	var out []Finding
	seen := map[string]bool{}
	for _, n := range f.Config.Networks {
		for _, link := range []string{n.Bridge, n.Egress} {
			if link == "" || seen[link] || strings.Contains(link, ".") {
				continue
			}
			seen[link] = true
			v, have := f.Obs.Sysctls[rpFilter(link)]
			if !have {
				continue
			}
			eff := max(all, v)
			ev := []string{fmt.Sprintf("%s = %s, %s = %s", rpFilter("all"), all, rpFilter(link), v)}
			if eff != "1" {
				out = append(out, ok("rp-filter", link, "reverse-path filtering is loose or off", ev...))
				continue
			}
			sev := Info
			why := "strict reverse-path filtering: works with one uplink, drops packets whose reply would leave by another interface"
			if uplinks > 1 {
				sev = Warning
				why = fmt.Sprintf("strict reverse-path filtering on a host with %d interfaces that have addresses: replies routed out another interface (asymmetric routes, policy routing) are dropped", uplinks)
			}
			out = append(out, Finding{Check: "rp-filter", Severity: sev, Subject: link, Summary: why, Evidence: ev,
				Fix: fmt.Sprintf("sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.%s.rp_filter=2 (loose: still drops sources no route leads back to)", link)})
		}
	}
	return out
}

// checkBridgeNF: with br_netfilter's global switches at 1, frames
// switched by every bridge, kvmnet's too (their own nf_call_* off do not
// win against it), go through iptables and conntrack: a FORWARD policy
// drop then cuts guests off from each other on one bridge.
func checkBridgeNF(f *Facts) []Finding {
	var out []Finding
	// kvmnet turns each of its bridges' own switches off; one found on
	// was turned on behind its back (the daemon puts it back).
	for _, n := range f.configNetworks() {
		if f.Obs.Links[n.Bridge].BridgeNF == "on" {
			out = append(out, Finding{Check: "br-netfilter", Severity: Warning, Subject: n.Bridge,
				Summary:  fmt.Sprintf("bridge %s sends its frames through iptables (its own nf_call_iptables, ip6tables or arptables is on)", n.Bridge),
				Evidence: []string{fmt.Sprintf("ip -d link show %s: nf_call_* on", n.Bridge)},
				Fix:      "kvmnet apply -f host.yaml (or ip link set " + n.Bridge + " type bridge nf_call_iptables 0 nf_call_ip6tables 0 nf_call_arptables 0)"})
		}
	}
	return append(out, checkBridgeNFGlobal(f)...)
}

func checkBridgeNFGlobal(f *Facts) []Finding {
	var on, ev []string
	for _, k := range plan.BridgeNFSysctls {
		if v, have := f.Obs.Sysctls[k]; have {
			ev = append(ev, k+" = "+v)
			if v == "1" {
				on = append(on, k)
			}
		}
	}
	if len(ev) == 0 {
		return []Finding{ok("br-netfilter", "", "br_netfilter is not loaded")}
	}
	if len(on) == 0 {
		return []Finding{ok("br-netfilter", "", "br_netfilter is loaded with its switches off", ev...)}
	}
	var fix []string
	for _, k := range on {
		fix = append(fix, k+"=0")
	}
	return []Finding{{Check: "br-netfilter", Severity: Warning,
		Summary:  "br_netfilter sends bridged frames through iptables, kvmnet's bridges included: a FORWARD drop policy or rule of another tool also filters traffic between guests, and their conntrack entries fill the table",
		Evidence: ev,
		Fix:      "sysctl -w " + strings.Join(fix, " ") + " (and in /etc/sysctl.d; Docker sets them for its own bridges: check its networks after)"}}
}

// checkForeignForward: base chains at one hook all see every packet; an
// accept in kvmnet's table does not stop another table's chain from
// dropping it. A forward chain with policy drop (Docker's, firewalld's,
// iptables -P FORWARD DROP) drops the guests' traffic unless its own
// rules accept it.
func checkForeignForward(f *Facts) []Finding {
	var out []Finding
	nat := natNetworks(f)
	for _, c := range f.Foreign {
		if c.Hook != "forward" || c.Policy != "drop" {
			continue
		}
		ev := []string{fmt.Sprintf("table %s %s, chain %s: type %s hook forward priority %d; policy drop", c.Family, c.Table, c.Name, c.Type, c.Priority)}
		var missing []string
		for _, n := range f.configNetworks() {
			if !slices.Contains(c.Mentions, n.Bridge) {
				missing = append(missing, n.Bridge)
			}
		}
		if len(c.Mentions) > 0 {
			ev = append(ev, "its rules name "+strings.Join(c.Mentions, ", "))
		}
		if len(missing) == 0 && f.Config != nil {
			out = append(out, Finding{Check: "foreign-forward-drop", Severity: Info, Subject: c.String(),
				Summary: "another table's forward chain drops by default; its rules name every kvmnet bridge, so they probably accept its traffic", Evidence: ev})
			continue
		}
		sev := Warning
		if len(nat) > 0 {
			sev = Critical
		}
		var fix []string
		for _, br := range missing {
			if c.Family == "ip" && c.Table == "filter" && c.Name == "FORWARD" {
				// iptables-nft's table: say it as iptables.
				fix = append(fix, fmt.Sprintf("iptables -I FORWARD -i %s -j ACCEPT; iptables -I FORWARD -o %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", br, br))
			} else {
				fix = append(fix, fmt.Sprintf(`nft insert rule %s %s %s iifname "%s" accept; nft insert rule %s %s %s oifname "%s" ct state established,related accept`, c.Family, c.Table, c.Name, br, c.Family, c.Table, c.Name, br))
			}
		}
		if len(fix) == 0 {
			fix = append(fix, "when networks are added, let their bridges' traffic pass this chain")
		}
		out = append(out, Finding{Check: "foreign-forward-drop", Severity: sev, Subject: c.String(),
			Summary:  fmt.Sprintf("another table's forward chain drops by default and says nothing of %s: guests' forwarded traffic is dropped there whatever kvmnet's table accepts (Docker, firewalld, libvirt or iptables -P FORWARD DROP)", strings.Join(missing, ", ")),
			Evidence: ev, Fix: strings.Join(fix, "; ") + " (or in that tool's own configuration, e.g. Docker's DOCKER-USER chain or a firewalld zone for the bridges)"})
	}
	if len(out) == 0 {
		out = append(out, ok("foreign-forward-drop", "", "no other table's forward chain drops by default"))
	}
	return out
}

// configNetworks are the desired networks (none without a desired state).
func (f *Facts) configNetworks() []model.Network {
	if f.Config == nil {
		return nil
	}
	return f.Config.Networks
}

// checkForeignMasquerade: another table that masquerades a kvmnet NAT
// subnet (libvirt's default network on the same range, a hand-made
// rule) translates its traffic a second time or out another interface.
func checkForeignMasquerade(f *Facts) []Finding {
	var out []Finding
	for _, c := range f.Foreign {
		for _, src := range c.Masquerades {
			for _, n := range natNetworks(f) {
				if src != "" && !overlaps(src, n.Subnet) {
					continue
				}
				what := "every source"
				if src != "" {
					what = src
				}
				sev := Warning
				if src == "" {
					sev = Info
				}
				out = append(out, Finding{Check: "foreign-masquerade", Severity: sev, Subject: c.String(),
					Summary:  fmt.Sprintf("another table masquerades %s, which covers network %s (%s): kvmnet already masquerades it out of its egress, and forwards' return traffic may be translated twice", what, n.Name, n.Subnet),
					Evidence: []string{fmt.Sprintf("table %s %s, chain %s (hook postrouting): masquerade of %s", c.Family, c.Table, c.Name, what)},
					Fix:      "give the other tool's network another subnet (virsh net-edit default), or limit its rule to its own subnet and bridge"})
			}
		}
	}
	if len(out) == 0 {
		out = append(out, ok("foreign-masquerade", "", "no other table masquerades a kvmnet subnet"))
	}
	return out
}

func overlaps(s string, p netip.Prefix) bool {
	q, err := netip.ParsePrefix(s)
	if err != nil {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return false
		}
		return p.Contains(a)
	}
	return q.Overlaps(p)
}

// checkMTU compares along each path: the MTU guests are told (mtu:), the
// bridge, its taps, and the uplink of a bridged network. A Linux bridge
// whose MTU was not set follows its smallest port down, so one tap set
// lower takes the whole network with it: the network's MTU is its mtu:,
// else the largest of its ports', and the ports that differ are named.
func checkMTU(f *Facts) []Finding {
	var out []Finding
	for _, n := range f.configNetworks() {
		br, have := f.Obs.Links[n.Bridge]
		if !have {
			continue // apply recreates it; the daemon within its resync
		}
		var ports []plan.Link
		for _, name := range f.Obs.Names() {
			if l := f.Obs.Links[name]; l.Master == n.Bridge {
				ports = append(ports, l)
			}
		}
		want, why := n.MTU, "mtu: in the file (the MTU guests are told)"
		if want == 0 {
			want, why = br.MTU, "the bridge's"
			for _, p := range ports {
				if p.MTU > want {
					want, why = p.MTU, "the largest of its ports'"
				}
			}
		}
		bad := false
		if br.MTU != want {
			bad = true
			out = append(out, Finding{Check: "mtu", Severity: Warning, Subject: n.Name,
				Summary:  fmt.Sprintf("bridge %s has MTU %d, the network's is %d (%s): a bridge follows its smallest port down", n.Bridge, br.MTU, want, why),
				Evidence: []string{fmt.Sprintf("%s mtu %d", n.Bridge, br.MTU)},
				Fix:      fmt.Sprintf("set the ports named below to %d; then kvmnet apply -f host.yaml (mtu: %d on the network keeps the bridge there)", want, want)})
		}
		for _, p := range ports {
			if p.MTU == want {
				continue
			}
			bad = true
			what := "tap"
			if p.Name == n.Uplink {
				what = "uplink"
			}
			out = append(out, Finding{Check: "mtu", Severity: Warning, Subject: p.Name,
				Summary:  fmt.Sprintf("%s %s has MTU %d, network %s %d (%s): frames larger than the smaller one are dropped on the way", what, p.Name, p.MTU, n.Name, want, why),
				Evidence: []string{fmt.Sprintf("%s mtu %d; %s mtu %d", p.Name, p.MTU, n.Bridge, br.MTU)},
				Fix:      fmt.Sprintf("ip link set %s mtu %d (libvirt: <mtu size='%d'/> in the VM's interface)", p.Name, want, want)})
		}
		if !bad {
			out = append(out, ok("mtu", n.Name, fmt.Sprintf("bridge %s and its ports agree on MTU %d", n.Bridge, br.MTU)))
		}
	}
	return out
}

// checkConntrack: the table's fill, and the kernel's failure counters.
// When it is full the kernel drops new connections of every guest and of
// the host itself.
func checkConntrack(f *Facts) []Finding {
	ct := f.Conntrack
	if !ct.Loaded {
		return []Finding{ok("conntrack-headroom", "", "nf_conntrack is not loaded (no NAT network yet)")}
	}
	var out []Finding
	ev := []string{fmt.Sprintf("nf_conntrack_count = %d, nf_conntrack_max = %d", ct.Count, ct.Max)}
	fill := 0.0
	if ct.Max > 0 {
		fill = float64(ct.Count) / float64(ct.Max)
	}
	fix := "raise the table: host: conntrack: {max: auto} (or a number) and kvmnet apply; find the guests holding the most entries (conntrack -L -s SUBNET | wc -l)"
	switch {
	case fill >= ctCriticalAt:
		out = append(out, Finding{Check: "conntrack-headroom", Severity: Critical, Summary: fmt.Sprintf("the connection-tracking table is %.0f%% full: at 100%% every new connection of every guest and of the host is dropped", fill*100), Evidence: ev, Fix: fix})
	case fill >= ctWarnAt:
		out = append(out, Finding{Check: "conntrack-headroom", Severity: Warning, Summary: fmt.Sprintf("the connection-tracking table is %.0f%% full", fill*100), Evidence: ev, Fix: fix})
	default:
		out = append(out, ok("conntrack-headroom", "", fmt.Sprintf("the connection-tracking table is %.0f%% full", fill*100), ev...))
	}
	var fails []string
	for _, k := range []string{"insert_failed", "drop", "early_drop"} {
		if v := ct.PerCPU[k]; v > 0 {
			fails = append(fails, fmt.Sprintf("%s = %d", k, v))
		}
	}
	if len(fails) > 0 {
		out = append(out, Finding{Check: "conntrack-failures", Severity: Warning,
			Summary:  "the kernel has dropped connections for want of room in the connection-tracking table since boot",
			Evidence: []string{"/proc/net/stat/nf_conntrack (summed over CPUs): " + strings.Join(fails, ", ")},
			Fix:      fix})
	}
	return out
}

// checkTimeouts: the kernel's 5-day established timeout keeps entries of
// guests that vanished for days, in a table all guests share.
func checkTimeouts(f *Facts) []Finding {
	key := plan.ConntrackTimeoutSysctl("tcpEstablished")
	v, have := f.Obs.Sysctls[key]
	if !have || len(natNetworks(f)) == 0 {
		return nil
	}
	secs, err := strconv.Atoi(v)
	if err != nil {
		return nil
	}
	d := time.Duration(secs) * time.Second
	ev := []string{fmt.Sprintf("%s = %s (%s)", key, v, d)}
	if d > establishedTooLong {
		return []Finding{{Check: "conntrack-timeouts", Severity: Info,
			Summary:  fmt.Sprintf("idle established TCP connections stay in the table for %s: guests that vanished hold their entries that long", d),
			Evidence: ev,
			Fix:      "host: conntrack: {timeouts: {tcpEstablished: 2h5m}} (RFC 5382's floor for NATs) and kvmnet apply"}}
	}
	return []Finding{ok("conntrack-timeouts", "", "the established timeout is "+d.String(), ev...)}
}

// Pool is the use of one NAT network's DHCP pool.
type Pool struct {
	Network string `json:"network"`
	Range   string `json:"range"`
	Size    int    `json:"size"`
	Used    int    `json:"used"`
	// Lease is the network's lease time, for messages.
	Lease string `json:"lease"`
}

// Pools counts, for each NAT network of cfg that serves DHCP, the
// addresses of its range and those under an active lease.
func Pools(cfg *model.Config, leases []store.Lease, now time.Time) []Pool {
	if cfg == nil {
		return nil
	}
	var out []Pool
	for _, n := range cfg.Networks {
		if n.Mode != model.ModeNAT || !n.DHCP.On() {
			continue
		}
		first, last := n.DHCP.RangeStart, n.DHCP.RangeEnd
		p := Pool{Network: n.Name, Range: n.DHCP.Range, Size: int(ipDistance(first, last)) + 1, Lease: n.DHCP.Lease.String()}
		for _, l := range leases {
			if l.Network == n.Name && !l.Expired(now) && l.IP.Compare(first) >= 0 && l.IP.Compare(last) <= 0 {
				p.Used++
			}
		}
		out = append(out, p)
	}
	return out
}

// checkPools: addresses left in each NAT network's DHCP pool.
func checkPools(f *Facts) []Finding {
	var out []Finding
	for _, p := range Pools(f.Config, f.Leases, f.Now) {
		free := p.Size - p.Used
		ev := []string{fmt.Sprintf("range %s: %d addresses, %d leased, %d free", p.Range, p.Size, p.Used, free)}
		fix := fmt.Sprintf("widen dhcp: {range: ...} of network %s, or shorten its lease (%s) so addresses of gone guests come back sooner", p.Network, p.Lease)
		switch {
		case free <= 0:
			out = append(out, Finding{Check: "dhcp-pool", Severity: Critical, Subject: p.Network, Summary: "the DHCP pool is exhausted: a new guest gets no address", Evidence: ev, Fix: fix})
		case float64(free) < poolWarnFree*float64(p.Size):
			out = append(out, Finding{Check: "dhcp-pool", Severity: Warning, Subject: p.Network, Summary: fmt.Sprintf("the DHCP pool has %d addresses left", free), Evidence: ev, Fix: fix})
		default:
			out = append(out, ok("dhcp-pool", p.Network, fmt.Sprintf("%d of %d addresses free", free, p.Size), ev...))
		}
	}
	return out
}

func ipDistance(a, b netip.Addr) uint32 {
	x, y := a.As4(), b.As4()
	return (uint32(y[0])<<24 | uint32(y[1])<<16 | uint32(y[2])<<8 | uint32(y[3])) -
		(uint32(x[0])<<24 | uint32(x[1])<<16 | uint32(x[2])<<8 | uint32(x[3]))
}

// checkStaleLeases: active leases of MACs no interface of the file has.
func checkStaleLeases(f *Facts) []Finding {
	if f.Config == nil {
		return nil
	}
	known := map[string]bool{}
	for _, vm := range f.Config.VMs {
		for _, ifc := range vm.Interfaces {
			known[ifc.Network+"/"+strings.ToLower(ifc.MAC)] = true
		}
	}
	var out []Finding
	for _, l := range f.Leases {
		if l.Expired(f.Now) || known[l.Network+"/"+strings.ToLower(l.MAC)] {
			continue
		}
		out = append(out, Finding{Check: "stale-lease", Severity: Info, Subject: l.Network,
			Summary:  fmt.Sprintf("%s is leased to %s, which no VM of the file has (a guest that is gone, or one not declared)", l.IP, l.MAC),
			Evidence: []string{fmt.Sprintf("lease %s %s %q until %s", l.Network, l.MAC, l.Hostname, l.Expiry.UTC().Format(time.RFC3339))},
			Fix:      "nothing when the guest is gone: the address returns to the pool when the lease ends; declare the guest (vms:) if it is meant to be there"})
	}
	if len(out) == 0 {
		out = append(out, ok("stale-lease", "", "every active lease belongs to a declared VM"))
	}
	return out
}

// checkTaps: every declared tap exists and is a port of its bridge.
func checkTaps(f *Facts) []Finding {
	if f.Config == nil {
		return nil
	}
	bridgeOf := map[string]string{}
	for _, n := range f.Config.Networks {
		bridgeOf[n.Name] = n.Bridge
	}
	var out []Finding
	for _, vm := range f.Config.VMs {
		for _, ifc := range vm.Interfaces {
			br := bridgeOf[ifc.Network]
			l, have := f.Obs.Links[ifc.Tap]
			switch {
			case !have && ifc.CreateTap:
				out = append(out, Finding{Check: "tap", Severity: Warning, Subject: ifc.Tap,
					Summary: fmt.Sprintf("tap %s of VM %s, which kvmnet creates, is missing", ifc.Tap, vm.Name), Evidence: []string{"no link " + ifc.Tap},
					Fix: "kvmnet apply -f host.yaml (the daemon recreates it within its resync when it runs)"})
			case !have:
				out = append(out, Finding{Check: "tap", Severity: Warning, Subject: ifc.Tap,
					Summary:  fmt.Sprintf("tap %s of VM %s (network %s) is missing: the VM is not running, or its tap has another name", ifc.Tap, vm.Name, ifc.Network),
					Evidence: []string{"no link " + ifc.Tap},
					Fix:      fmt.Sprintf("start the VM (virsh start %s); if its tap is named otherwise, set tap: in the file; if the VM is gone, remove it (kvmnet vm detach %s)", vm.Name, vm.Name)})
			case l.Master != br:
				out = append(out, Finding{Check: "tap", Severity: Warning, Subject: ifc.Tap,
					Summary:  fmt.Sprintf("tap %s of VM %s is not a port of bridge %s", ifc.Tap, vm.Name, br),
					Evidence: []string{fmt.Sprintf("%s master %q", ifc.Tap, l.Master)},
					Fix:      "kvmnet apply -f host.yaml (the daemon adopts it at once when it runs)"})
			default:
				out = append(out, ok("tap", ifc.Tap, "on bridge "+br))
			}
		}
	}
	return out
}

// featureFix says how to get a feature a stock Debian kernel has.
var featureFix = map[plan.Feature]string{
	plan.FeatureFlowtable:  "modprobe nf_flow_table_inet (Debian's kernel has it; a CI kernel may not): needed for fastpath",
	plan.FeatureVLAN:       "modprobe 8021q: needed for VLAN interfaces",
	plan.FeatureBridgeVLAN: "a kernel with CONFIG_BRIDGE_VLAN_FILTERING (Debian's has it): needed for vlans: on bridged networks",
}

// checkFeatures: what kvmnet could use and this kernel cannot give.
func checkFeatures(f *Facts) []Finding {
	var out []Finding
	for _, feat := range Features {
		if why, missing := f.Obs.Missing[feat]; missing {
			out = append(out, Finding{Check: "kernel-feature", Severity: Info, Subject: string(feat),
				Summary: "this kernel lacks " + string(feat), Evidence: []string{why}, Fix: featureFix[feat]})
		} else {
			out = append(out, ok("kernel-feature", string(feat), "available"))
		}
	}
	if f.VhostNet != "" {
		sev := Info
		if f.Config != nil && slices.ContainsFunc(f.Config.VMs, func(vm model.VM) bool {
			return slices.ContainsFunc(vm.Interfaces, func(i model.Interface) bool { return i.CreateTap })
		}) {
			// qemu run by hand on kvmnet's taps asks for vhost=on.
			sev = Warning
		}
		out = append(out, Finding{Check: "kernel-feature", Severity: sev, Subject: "vhost-net",
			Summary:  "guests' virtio-net runs in qemu's userspace, not in the kernel: more CPU per packet, less throughput",
			Evidence: []string{f.VhostNet}, Fix: "modprobe vhost_net (and vhost_net in /etc/modules-load.d)"})
	} else {
		out = append(out, ok("kernel-feature", "vhost-net", "available"))
	}
	return out
}

// checkDaemon: NAT networks expect kvmnet's DHCP and DNS, which the
// daemon serves.
func checkDaemon(f *Facts) []Finding {
	var want []string
	for _, n := range natNetworks(f) {
		if n.DHCP.On() || n.DNS.On() {
			want = append(want, n.Name)
		}
	}
	switch {
	case len(want) == 0:
		return nil
	case f.Daemon:
		return []Finding{ok("daemon", "", "kvmnet's daemon answers")}
	}
	fix := f.StartDaemon
	if fix == "" {
		fix = "systemctl start kvmnet (or kvmnet daemon)"
	}
	return []Finding{{Check: "daemon", Severity: Critical,
		Summary:  fmt.Sprintf("kvmnet's daemon is not running: guests of %s get no DHCP lease and no DNS answers, late taps are not adopted, drift is not repaired", strings.Join(want, ", ")),
		Evidence: []string{"no daemon answers on the socket"},
		Fix:      fix}}
}
