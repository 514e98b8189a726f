package plan

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/kvmnet/kvmnet/internal/model"
)

// Port security lives in kvmnet's own bridge-family table, also named
// kvmnet: frames are checked as they enter a bridge from a guest's port
// (iifname is the tap), before the bridge forwards them or hands them to
// the host. Ports are elements of sets; attaching a guest adds elements.
const (
	// SetSGPorts holds the taps whose guests are checked (spoofguard on).
	SetSGPorts = "sg_ports"
	// SetSGMAC holds TAP . MAC: the one source MAC a port may use.
	SetSGMAC = "sg_mac"
	// SetSGIP4 holds TAP . IPV4: the addresses a port may use as source
	// (its reservation, its DHCP lease).
	SetSGIP4 = "sg_ip4"
	// SetSGBind holds TAP . MAC . IPV4, for the fast path of bound unicast
	// TCP: one lookup instead of the whole chain.
	SetSGBind = "sg_bind"
)

// DropReasons are the reasons port security drops a frame for; each has a
// dynamic set drop_REASON whose elements (taps) carry a packet counter.
var DropReasons = []string{"mac", "arp", "ip", "ipv6", "dhcp_server", "ra", "storm", "vlan"}

// DropSet is the counter set of a reason.
func DropSet(reason string) string { return "drop_" + reason }

// bridgeRules are the fixed rules of chain "ports", in order, each with
// the reason it drops for.
var bridgeRules = []Rule{
	// A frame must carry the port's own MAC as its source.
	{`iifname . ether saddr != @sg_mac update @drop_mac { iifname counter } drop`, "mac"},
	// ARP must name the port's MAC and one of its addresses (0.0.0.0 is
	// an address probe, RFC 5227): no gateway impersonation.
	{`iifname . arp saddr ether != @sg_mac update @drop_arp { iifname counter } drop`, "arp-mac"},
	{`arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @sg_ip4 update @drop_arp { iifname counter } drop`, "arp-ip"},
	// Guests are DHCP clients, never servers (no rogue DHCP, no RAs).
	{`udp sport 67 update @drop_dhcp_server { iifname counter } drop`, "dhcp-server"},
	{`udp sport 547 update @drop_dhcp_server { iifname counter } drop`, "dhcp6-server"},
	{`icmpv6 type nd-router-advert update @drop_ra { iifname counter } drop`, "ra"},
	// Before it has an address, a guest may only ask for one.
	{`ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept`, "dhcp-client"},
	{`ether type ip iifname . ip saddr != @sg_ip4 update @drop_ip { iifname counter } drop`, "ip"},
	// IPv6: link-local and the unspecified address (DAD) only; kvmnet
	// binds no global IPv6 addresses to guests.
	{`ether type ip6 ip6 saddr != { ::, fe80::/10 } update @drop_ipv6 { iifname counter } drop`, "ipv6"},
}

// StormClass is a distinct broadcastLimit: broadcast and multicast frames
// per second (or minute) a port may send. One rule per class.
type StormClass = RateClass

// DefaultBroadcastLimit applies to protected ports without broadcastLimit:
// far above what ARP and DHCP need, far below a storm.
var DefaultBroadcastLimit = StormClass{Count: 1000, Unit: "second"}

func stormKeys(c StormClass) string  { return fmt.Sprintf("storm_%d_%s_keys", c.Count, c.Unit) }
func stormMeter(c StormClass) string { return fmt.Sprintf("storm_%d_%s_meter", c.Count, c.Unit) }

// DesiredBridgeRuleset returns the bridge table for the given storm classes.
func DesiredBridgeRuleset(storms []StormClass) Ruleset {
	rs := Ruleset{Family: knftables.BridgeFamily}
	rs.Sets = append(rs.Sets,
		Set{Name: SetSGPorts, Type: "ifname", Comment: "ports with spoofguard"},
		Set{Name: SetSGMAC, Type: "ifname . ether_addr", Comment: "port . its mac"},
		Set{Name: SetSGIP4, Type: "ifname . ipv4_addr", Comment: "port . its addresses"},
		Set{Name: SetSGBind, Type: "ifname . ether_addr . ipv4_addr", Comment: "port . its mac . its addresses"},
	)
	for _, r := range DropReasons {
		rs.Sets = append(rs.Sets, Set{Name: DropSet(r), Type: "ifname", Dynamic: true, NoTimeout: true, Comment: "drops: " + r})
	}
	ch := Chain{Name: "ports", Type: knftables.FilterType, Hook: knftables.PreroutingHook, Priority: knftables.FilterPriority}
	// Frames from unprotected ports (the uplink, spoofguard: false) leave
	// at once, and so does the bulk of a protected guest's traffic:
	// unicast TCP from its own MAC and address.
	ch.Rules = append(ch.Rules,
		Rule{`iifname != @sg_ports accept`, "unprotected"},
		// A protected port is an untagged port (an access port, or a port
		// of a bridge without VLANs; model refuses spoofguard on a trunk).
		// The checks below see no further than an 802.1Q/802.1ad header
		// (nft reads ether type as the tag's, and an inner tag hides the
		// rest), so a tagged frame would pass them, or reach a VLAN the
		// port is not on through a bridge that does not filter VLANs:
		// tagged frames are dropped, before the fast path accepts any.
		Rule{`ether type { 8021q, 8021ad } update @drop_vlan { iifname counter } drop`, "vlan"},
		Rule{`ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 meta l4proto tcp iifname . ether saddr . ip saddr @sg_bind accept`, "bound-tcp"},
	)
	sort.Slice(storms, func(i, j int) bool { return stormKeys(storms[i]) < stormKeys(storms[j]) })
	// Storm control first: a flood is cut before it costs more lookups.
	for _, c := range storms {
		ch.Rules = append(ch.Rules, Rule{
			Rule: fmt.Sprintf(`ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 iifname @%s add @%s { iifname limit rate over %d/%s } update @drop_storm { iifname counter } drop`,
				stormKeys(c), stormMeter(c), c.Count, c.Unit),
			Comment: fmt.Sprintf("storm-%d/%s", c.Count, c.Unit),
		})
		rs.Sets = append(rs.Sets,
			Set{Name: stormKeys(c), Type: "ifname", Comment: fmt.Sprintf("ports limited to %d/%s broadcast", c.Count, c.Unit)},
			Set{Name: stormMeter(c), Type: "ifname", Dynamic: true, Timeout: "1m", Comment: "broadcast meters"},
		)
	}
	ch.Rules = append(ch.Rules, bridgeRules...)
	rs.Chains = []Chain{ch}
	return rs
}

// bridgeSetType is SetType for the bridge table.
func bridgeSetType(name string) (Set, bool) {
	var count uint64
	var unit, kind string
	storms := []StormClass{}
	if n, _ := fmt.Sscanf(strings.ReplaceAll(name, "_", " "), "storm %d %s %s", &count, &unit, &kind); n == 3 {
		storms = append(storms, StormClass{Count: count, Unit: unit})
	}
	for _, s := range DesiredBridgeRuleset(storms).Sets {
		if s.Name == name {
			return s, true
		}
	}
	return Set{}, false
}

// portSecurity adds the elements that protect one VM interface: its MAC
// and addresses in the bridge table, its storm class, and its connection
// cap and new-connection rate in the inet table.
func portSecurity(cfg *model.Config, n *model.Network, p model.Port, opt Options, elems, belems Elements, storms map[StormClass]bool, connLimits map[int]bool, newConns map[NewConnClass]bool) error {
	sec := p.Iface.Security
	tap := p.Iface.Tap
	var addrs []netip.Addr
	if p.Iface.IP.IsValid() {
		addrs = append(addrs, p.Iface.IP)
	}
	if l, ok := opt.Leases[n.Name+"/"+p.Iface.HWAddr]; ok && l != p.Iface.IP {
		addrs = append(addrs, l)
	}
	if sec.MaxConnections > 0 {
		connLimits[sec.MaxConnections] = true
		key := fmt.Sprintf("climit_%d_keys", sec.MaxConnections)
		for _, a := range addrs {
			elems[key] = append(elems[key], NewElement(a.String()))
		}
	}
	if sec.NewConnections != "" {
		nc, err := rateClass(sec.NewConnections)
		if err != nil {
			return cfg.Errorf(fmt.Sprintf("vms[%d].interfaces[%d].security.newConnections", vmIndex(cfg, p.VM), p.Index), "%v", err)
		}
		newConns[nc] = true
		key := NewConnKeysSet(nc)
		for _, a := range addrs {
			elems[key] = append(elems[key], NewElement(a.String()))
		}
	}
	if !sec.SpoofguardOn() {
		return nil
	}
	belems[SetSGPorts] = append(belems[SetSGPorts], NewElement(tap))
	belems[SetSGMAC] = append(belems[SetSGMAC], NewElement(tap, p.Iface.HWAddr))
	for _, a := range addrs {
		belems[SetSGIP4] = append(belems[SetSGIP4], NewElement(tap, a.String()))
		belems[SetSGBind] = append(belems[SetSGBind], NewElement(tap, p.Iface.HWAddr, a.String()))
	}
	storm := DefaultBroadcastLimit
	if sec.BroadcastLimit != "" {
		var err error
		if storm, err = rateClass(sec.BroadcastLimit); err != nil {
			return cfg.Errorf(fmt.Sprintf("vms[%d].interfaces[%d].security.broadcastLimit", vmIndex(cfg, p.VM), p.Index), "%v", err)
		}
	}
	storms[storm] = true
	belems[stormKeys(storm)] = append(belems[stormKeys(storm)], NewElement(tap))
	return nil
}

// rateClass parses a rate such as "200/second" (see model.ParseRateLimit).
func rateClass(s string) (RateClass, error) {
	count, per, err := model.ParseRateLimit(s)
	if err != nil {
		return RateClass{}, err
	}
	c := RateClass{Count: count, Unit: "second"}
	if per == time.Minute {
		c.Unit = "minute"
	}
	return c, nil
}
