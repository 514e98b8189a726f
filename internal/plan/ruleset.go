package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/knftables"
)

// TableName is kvmnet's one nftables table (family inet). kvmnet never
// writes to any other table.
const TableName = "kvmnet"

// Set and map names. Rules look networks, guests and forwards up in these;
// adding any of them adds elements, never rules. ("fwd" is an nft keyword,
// hence "dnat4".)
const (
	// SetNATIfs holds the bridges of NAT networks (type ifname).
	SetNATIfs = "nat_ifs"
	// SetNATSame holds BR . BR for every NAT bridge: routing back into the
	// same network is allowed.
	SetNATSame = "nat_same"
	// SetNATOut holds BR . EGRESS: new connections from a NAT network may
	// leave through its egress interface.
	SetNATOut = "nat_out"
	// SetMasq holds SUBNET . EGRESS: what to masquerade where.
	SetMasq = "masq"
	// SetHairpin holds SUBNET . BR: a forwarded connection from inside the
	// network it is forwarded into is masqueraded, so replies come back
	// through the host instead of straight from guest to guest.
	SetHairpin = "hairpin"
	// MapDNAT maps LISTEN . PROTO . PORT to TARGET . PORT: every port
	// forward, one lookup whatever their number.
	MapDNAT = "dnat4"
	// SetFwdRestricted holds LISTEN . PROTO . PORT of forwards that have a
	// from: list.
	SetFwdRestricted = "fwd_restricted"
	// SetFwdFrom holds LISTEN . PROTO . PORT . SOURCE-PREFIX: who may use a
	// restricted forward.
	SetFwdFrom = "fwd_from"
)

// Chain is a base chain of the desired table with its rules.
type Chain struct {
	Name     string
	Type     knftables.BaseChainType
	Hook     knftables.BaseChainHook
	Priority knftables.BaseChainPriority
	Rules    []Rule
}

// Rule is one rule. Comment is its identity: the planner recognises rules
// by comment, never by their expressions.
type Rule struct {
	Rule    string
	Comment string
}

// Set is a named set or map of the desired table.
type Set struct {
	Name     string
	Type     string
	Map      string // value type of a map; "" for a set
	Interval bool
	// Dynamic sets are filled by the rules themselves (rate meters); the
	// planner never reconciles their elements.
	Dynamic bool
	// NoTimeout dynamic sets keep elements until deleted (ct count needs
	// that).
	NoTimeout bool
	Timeout   string
	Comment   string
}

// Priorities of kvmnet's base chains, named after nft's own.
const (
	// priorityGuard runs the forward allow-lists and rate limits just
	// before destination NAT (dstnat is -100), on the original addresses.
	priorityGuard knftables.BaseChainPriority = "dstnat - 10"
	// priorityOutputNAT is dstnat for the output hook; nft 1.0.6 does not
	// accept the keyword there.
	priorityOutputNAT knftables.BaseChainPriority = "-100"
)

// baseChains are kvmnet's base chains with their fixed rules. Every chain
// has policy accept: kvmnet only drops what concerns its own networks and
// never the host's other traffic. Rules are evaluated in order; each
// carries a comment saying why.
var baseChains = []Chain{
	{
		Name: "guard", Type: knftables.FilterType, Hook: knftables.PreroutingHook, Priority: priorityGuard,
		Rules: []Rule{
			// A forward with a from: list admits only those sources.
			{`ct state new ip daddr . meta l4proto . th dport @fwd_restricted ip daddr . meta l4proto . th dport . ip saddr != @fwd_from counter drop`, "forward-from-drop"},
			// Rate limits follow, one rule per distinct rate (RateRules).
		},
	},
	{
		Name: "prerouting", Type: knftables.NATType, Hook: knftables.PreroutingHook, Priority: knftables.DNATPriority,
		Rules: []Rule{
			{`dnat ip to ip daddr . meta l4proto . th dport map @dnat4`, "forward"},
		},
	},
	{
		Name: "output", Type: knftables.NATType, Hook: knftables.OutputHook, Priority: priorityOutputNAT,
		Rules: []Rule{
			// The host itself reaching its own forwarded ports.
			{`dnat ip to ip daddr . meta l4proto . th dport map @dnat4`, "forward-local"},
		},
	},
	{
		Name: "input", Type: knftables.FilterType, Hook: knftables.InputHook, Priority: knftables.FilterPriority,
		Rules: []Rule{
			// Guests may use the gateway's DHCP and DNS, answer replies and
			// ping it; nothing else of the host is open to them.
			{`iifname @nat_ifs udp dport 67 accept`, "guest-dhcp"},
			{`iifname @nat_ifs meta l4proto { tcp, udp } th dport 53 accept`, "guest-dns"},
			{`iifname @nat_ifs ct state established,related accept`, "guest-established"},
			{`iifname @nat_ifs icmp type { echo-request, destination-unreachable, time-exceeded } accept`, "guest-icmp"},
			{`iifname @nat_ifs icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, echo-request } accept`, "guest-icmpv6"},
			{`iifname @nat_ifs counter drop`, "guest-to-host-drop"},
		},
	},
	{
		Name: "forward", Type: knftables.FilterType, Hook: knftables.ForwardHook, Priority: knftables.FilterPriority,
		Rules: []Rule{
			{`ct state established,related accept`, "established"},
			// Routed back into the network it came from (a guest using the
			// gateway to reach its neighbour).
			{`iifname . oifname @nat_same accept`, "same-network"},
			// Port forwards, already checked by the guard chain; from any
			// network or from outside.
			{`ct status dnat accept`, "forwarded"},
			// Nothing else crosses between two kvmnet networks.
			{`iifname @nat_ifs oifname @nat_ifs counter drop`, "between-networks-drop"},
			{`iifname . oifname @nat_out accept`, "nat-egress"},
			// New connections into a NAT network come only through forwards.
			{`oifname @nat_ifs counter drop`, "into-nat-drop"},
			// A NAT network's traffic leaves only through its egress.
			{`iifname @nat_ifs counter drop`, "nat-elsewhere-drop"},
		},
	},
	{
		Name: "postrouting", Type: knftables.NATType, Hook: knftables.PostroutingHook, Priority: knftables.SNATPriority,
		Rules: []Rule{
			{`ct status dnat ip saddr . oifname @hairpin masquerade`, "hairpin"},
			{`ip saddr . oifname @masq masquerade`, "masquerade"},
		},
	},
}

// baseSets are the named sets and maps every table has.
var baseSets = []Set{
	{Name: SetNATIfs, Type: "ifname", Comment: "bridges of nat networks"},
	{Name: SetNATSame, Type: "ifname . ifname", Comment: "bridge . bridge"},
	{Name: SetNATOut, Type: "ifname . ifname", Comment: "bridge . egress"},
	{Name: SetMasq, Type: "ipv4_addr . ifname", Interval: true, Comment: "subnet . egress"},
	{Name: SetHairpin, Type: "ipv4_addr . ifname", Interval: true, Comment: "subnet . bridge"},
	{Name: MapDNAT, Type: "ipv4_addr . inet_proto . inet_service", Map: "ipv4_addr . inet_service", Comment: "listen . proto . port : target . port"},
	{Name: SetFwdRestricted, Type: "ipv4_addr . inet_proto . inet_service", Comment: "forwards with a from list"},
	{Name: SetFwdFrom, Type: "ipv4_addr . inet_proto . inet_service . ipv4_addr", Interval: true, Comment: "forward . allowed source"},
}

// RateClass is one distinct rateLimit of forwards, e.g. 50/second. Each
// class costs one rule and two sets, whatever the number of forwards in it:
// nft takes a limit's rate as a constant, so it cannot come from a map.
type RateClass struct {
	Count uint64
	Unit  string // "second" or "minute"
}

// name is the class's set-name stem, e.g. "rl_50_second".
func (r RateClass) name() string { return fmt.Sprintf("rl_%d_%s", r.Count, r.Unit) }

// KeysSet holds LISTEN . PROTO . PORT of the forwards limited at this rate.
func (r RateClass) KeysSet() string { return r.name() + "_keys" }

// meterSet is the dynamic set of per-source meters.
func (r RateClass) meterSet() string { return r.name() + "_meter" }

// NewConnClass is one distinct newConnections rate of guests, e.g.
// 200/second: new connections (conntrack entries) a guest may open. Like a
// RateClass it costs one rule and two sets whatever the number of guests.
type NewConnClass = RateClass

// newConnName is the class's set-name stem, e.g. "nc_200_second".
func newConnName(c NewConnClass) string { return fmt.Sprintf("nc_%d_%s", c.Count, c.Unit) }

// NewConnKeysSet holds the addresses of the guests limited at this rate.
func NewConnKeysSet(c NewConnClass) string { return newConnName(c) + "_keys" }

// newConnMeter is the dynamic set of per-guest meters.
func newConnMeter(c NewConnClass) string { return newConnName(c) + "_meter" }

// ReasonNewConnections is the drop reason of newConnections. Its counters
// live in the inet table (SetDropNewConnections, keyed by the guest's
// address), where conntrack has already told new connections apart; the
// bridge table's drop sets are keyed by tap and see frames before that.
const ReasonNewConnections = "new_connections"

// SetDropNewConnections counts, per guest address, the new connections
// dropped for going over the guest's newConnections rate. It exists while
// some guest has a rate.
var SetDropNewConnections = DropSet(ReasonNewConnections)

// PortDropReasons are every reason a guest's traffic is dropped for, as
// `kvmnet get ports` and the port security metric show them: the bridge
// table's and newConnections.
var PortDropReasons = append(append([]string(nil), DropReasons...), ReasonNewConnections)

// Ruleset is the whole desired table but for the elements.
type Ruleset struct {
	// Family is the table's family: inet (routing, NAT, forwards) or
	// bridge (port security).
	Family knftables.Family
	Chains []Chain
	Sets   []Set
	// Flowtables are the flowtables of the fast path (see withFastpath).
	Flowtables []Flowtable
}

// DesiredRuleset returns the inet table for the given rate classes of
// forwards, connection limits and new-connection rates of guests.
func DesiredRuleset(classes []RateClass, connLimits []int, newConns []NewConnClass) Ruleset {
	rs := Ruleset{Family: knftables.InetFamily, Sets: append([]Set(nil), baseSets...)}
	sort.Slice(classes, func(i, j int) bool { return classes[i].name() < classes[j].name() })
	sort.Slice(newConns, func(i, j int) bool { return newConnName(newConns[i]) < newConnName(newConns[j]) })
	for _, c := range baseChains {
		c.Rules = append([]Rule(nil), c.Rules...)
		if c.Name == "guard" {
			for _, rc := range classes {
				c.Rules = append(c.Rules, Rule{
					Rule: fmt.Sprintf(`ct state new ip daddr . meta l4proto . th dport @%s add @%s { ip saddr . ip daddr . meta l4proto . th dport limit rate over %d/%s } counter drop`,
						rc.KeysSet(), rc.meterSet(), rc.Count, rc.Unit),
					Comment: fmt.Sprintf("forward-rate-%d/%s-drop", rc.Count, rc.Unit),
				})
			}
			// A guest's new connections are limited (newConnections), one
			// rule per distinct rate, keyed by the guest's bound address
			// like maxConnections below. It comes first: a connection
			// dropped for its rate never enters the guest's count, and a
			// guest at its cap that floods SYNs is cut here, before each
			// SYN costs a count (closed connections waiting out their
			// timeout fill the conntrack table, not the cap).
			for _, nc := range newConns {
				c.Rules = append(c.Rules, Rule{
					Rule: fmt.Sprintf(`ct state new ip saddr @%s add @%s { ip saddr limit rate over %d/%s } update @%s { ip saddr counter } drop`,
						NewConnKeysSet(nc), newConnMeter(nc), nc.Count, nc.Unit, SetDropNewConnections),
					Comment: fmt.Sprintf("guest-new-connections-%d/%s-drop", nc.Count, nc.Unit),
				})
			}
			// A guest's tracked connections are capped (maxConnections), one
			// rule per distinct cap; guests are keyed by their bound
			// addresses, which spoofguard makes trustworthy.
			sort.Ints(connLimits)
			for _, n := range connLimits {
				c.Rules = append(c.Rules, Rule{
					Rule:    fmt.Sprintf(`ct state new ip saddr @climit_%d_keys add @climit_%d_meter { ip saddr ct count over %d } counter drop`, n, n, n),
					Comment: fmt.Sprintf("guest-connections-over-%d-drop", n),
				})
			}
		}
		rs.Chains = append(rs.Chains, c)
	}
	for _, rc := range classes {
		rs.Sets = append(rs.Sets,
			Set{Name: rc.KeysSet(), Type: "ipv4_addr . inet_proto . inet_service", Comment: fmt.Sprintf("forwards limited to %d/%s per source", rc.Count, rc.Unit)},
			Set{Name: rc.meterSet(), Type: "ipv4_addr . ipv4_addr . inet_proto . inet_service", Dynamic: true, Timeout: "1m", Comment: "source . forward meters"},
		)
	}
	for _, n := range connLimits {
		rs.Sets = append(rs.Sets,
			Set{Name: fmt.Sprintf("climit_%d_keys", n), Type: "ipv4_addr", Comment: fmt.Sprintf("guests limited to %d connections", n)},
			Set{Name: fmt.Sprintf("climit_%d_meter", n), Type: "ipv4_addr", Dynamic: true, NoTimeout: true, Comment: "connection counts"},
		)
	}
	for _, nc := range newConns {
		rs.Sets = append(rs.Sets,
			Set{Name: NewConnKeysSet(nc), Type: "ipv4_addr", Comment: fmt.Sprintf("guests limited to %d new connections/%s", nc.Count, nc.Unit)},
			Set{Name: newConnMeter(nc), Type: "ipv4_addr", Dynamic: true, Timeout: "1m", Comment: "new connection meters"},
		)
	}
	if len(newConns) > 0 {
		rs.Sets = append(rs.Sets, Set{Name: SetDropNewConnections, Type: "ipv4_addr", Dynamic: true, NoTimeout: true, Comment: "drops: " + ReasonNewConnections})
	}
	return rs
}

// set returns the named set of the ruleset.
func (rs Ruleset) set(name string) (Set, bool) {
	for _, s := range rs.Sets {
		if s.Name == name {
			return s, true
		}
	}
	return Set{}, false
}

// TableComment identifies the version of the fixed part of the ruleset
// (base chains, rules, set definitions). When it differs from the kernel's,
// the table is rebuilt; otherwise rules are compared by comment and set
// elements are reconciled. It is the table's comment, and the name of an
// empty chain (VersionChain) where it is read back: neither nft 1.0.6's
// JSON nor the netlink library return table or set comments.
var TableComment = func() string {
	h := sha256.New()
	for _, c := range baseChains {
		fmt.Fprintf(h, "chain %s %s %s %s\n", c.Name, c.Type, c.Hook, c.Priority)
		for _, r := range c.Rules {
			fmt.Fprintf(h, "%s # %s\n", r.Rule, r.Comment)
		}
	}
	for _, s := range baseSets {
		fmt.Fprintf(h, "set %s %s %s %t\n", s.Name, s.Type, s.Map, s.Interval)
	}
	// Meter sets carry their timeout since this line: tables made
	// before are rebuilt once.
	fmt.Fprintf(h, "meters expire\n")
	return "kvmnet ruleset " + hex.EncodeToString(h.Sum(nil))[:12]
}()

// VersionChainPrefix starts the name of the empty chain that carries the
// ruleset version, e.g. "ruleset_8cc10f9396b1".
const VersionChainPrefix = "ruleset_"

// versionChain is the name of the version chain for a table comment.
func versionChain(comment string) string {
	return VersionChainPrefix + strings.TrimPrefix(comment, "kvmnet ruleset ")
}

// BridgeTableComment is TableComment for the bridge table.
var BridgeTableComment = func() string {
	h := sha256.New()
	rs := DesiredBridgeRuleset([]StormClass{{Count: 1, Unit: "second"}})
	for _, r := range rs.Chains[0].Rules {
		fmt.Fprintf(h, "%s # %s\n", r.Rule, r.Comment)
	}
	for _, s := range rs.Sets {
		fmt.Fprintf(h, "set %s %s %t %s\n", s.Name, s.Type, s.Dynamic, s.Timeout)
	}
	return "kvmnet ruleset " + hex.EncodeToString(h.Sum(nil))[:12]
}()

// VersionFromChain returns the TableComment a version chain stands for.
func VersionFromChain(name string) (string, bool) {
	v, ok := strings.CutPrefix(name, VersionChainPrefix)
	return "kvmnet ruleset " + v, ok
}

// Elements are set and map contents keyed by set name (see Element).
type Elements map[string][]Element

// sorted returns a copy with every set sorted and deduplicated.
func (e Elements) sorted() Elements {
	out := Elements{}
	for k, v := range e {
		if strictlySorted(v) {
			// Already so (a reading of the kernel is sorted); nothing
			// changes the slices of a plan's inputs.
			out[k] = v
			continue
		}
		s := slices.Clone(v)
		slices.Sort(s)
		s = dedup(s)
		out[k] = s
	}
	return out
}

// strictlySorted reports whether s is sorted without repeats.
func strictlySorted[E ~string](s []E) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] >= s[i] {
			return false
		}
	}
	return true
}

func dedup[E ~string](s []E) []E {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// TableState is what the kernel holds of the kvmnet table.
type TableState struct {
	Exists bool
	// Comment is the ruleset version read back (see TableComment).
	Comment string
	// Chains maps chain name to the comments of its rules, in order.
	Chains map[string][]string
	// Sets maps set and map names to their elements (normalised as in
	// Elements).
	Sets Elements
	// Flowtables maps flowtable names to what the kernel holds of them.
	Flowtables map[string]Flowtable
}

// NftChange is the nftables part of a plan: either a rebuild of the whole
// table or element edits, always run as one transaction.
type NftChange struct {
	// Ruleset is the desired table (chains, sets).
	Ruleset Ruleset
	// Version is the table's version comment (TableComment or
	// BridgeTableComment).
	Version string
	// Rebuild deletes (if Exists) and recreates the table with Elements.
	Rebuild bool
	Exists  bool
	// Delete removes the table altogether (destroy).
	Delete bool
	// Elements is the whole desired content (used by Rebuild).
	Elements Elements
	// Add and Del are element edits (used when not rebuilding).
	Add, Del Elements
}

// Transaction renders the change as one knftables transaction; `nft -f`
// applies all of it or nothing.
func (c *NftChange) Transaction(tx *knftables.Transaction) {
	if c.Delete {
		tx.Delete(&knftables.Table{})
		return
	}
	if c.Rebuild {
		if c.Exists {
			tx.Delete(&knftables.Table{})
		}
		tx.Add(&knftables.Table{Comment: knftables.PtrTo(c.Version)})
		tx.Add(&knftables.Chain{Name: versionChain(c.Version), Comment: knftables.PtrTo("version of kvmnet's ruleset; empty")})
		for _, s := range c.Ruleset.Sets {
			comment := s.Comment
			if s.Map != "" {
				tx.Add(&knftables.Map{Name: s.Name, Type: s.Type + " : " + s.Map, Comment: knftables.PtrTo(comment)})
				continue
			}
			set := &knftables.Set{Name: s.Name, Type: s.Type, Comment: knftables.PtrTo(comment)}
			if s.Interval {
				set.Flags = append(set.Flags, knftables.IntervalFlag)
			}
			if s.Dynamic {
				set.Flags = append(set.Flags, knftables.DynamicFlag)
				if !s.NoTimeout {
					set.Flags = append(set.Flags, knftables.TimeoutFlag)
				}
			}
			if s.Timeout != "" {
				// Without a set timeout the flag alone lets elements live
				// for ever: a meter keyed by source address then fills
				// up (size 65535), and a full set's `add` fails, which
				// ends the rule without its drop.
				if d, err := time.ParseDuration(s.Timeout); err == nil {
					set.Timeout = &d
				}
			}
			tx.Add(set)
		}
		addFlowtables(tx, c.Ruleset.Flowtables)
		for _, ch := range c.Ruleset.Chains {
			tx.Add(&knftables.Chain{
				Name: ch.Name, Type: knftables.PtrTo(ch.Type), Hook: knftables.PtrTo(ch.Hook),
				Priority: knftables.PtrTo(ch.Priority), Policy: knftables.PtrTo(knftables.AcceptPolicy),
			})
			for _, r := range ch.Rules {
				tx.Add(&knftables.Rule{Chain: ch.Name, Rule: r.Rule, Comment: knftables.PtrTo(r.Comment)})
			}
		}
		c.addElements(tx, c.Elements, false)
		return
	}
	// Delete before add: an element that only changed its value would
	// otherwise collide with itself.
	c.addElements(tx, c.Del, true)
	c.addElements(tx, c.Add, false)
}

func (c *NftChange) addElements(tx *knftables.Transaction, e Elements, del bool) {
	for _, name := range sortedKeys(e) {
		s, _ := c.Ruleset.set(name)
		for _, el := range e[name] {
			elem := &knftables.Element{Key: quoteKey(s.Type, el.Key())}
			if s.Map != "" {
				elem.Map, elem.Value = name, el.Value()
			} else {
				elem.Set = name
			}
			if del {
				tx.Delete(elem)
			} else {
				tx.Add(elem)
			}
		}
	}
}

// quoteKey turns the fields of an element's key into nft syntax: ifname
// fields quoted.
func quoteKey(typ string, parts []string) []string {
	types := strings.Split(typ, fieldSep)
	for i := range parts {
		if i < len(types) && types[i] == "ifname" {
			parts[i] = `"` + parts[i] + `"`
		}
	}
	return parts
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Empty reports whether the change does nothing.
func (c *NftChange) Empty() bool {
	return !c.Rebuild && !c.Delete && len(c.Add) == 0 && len(c.Del) == 0
}

// SetType returns the definition of a set or map kvmnet may have in its
// table of family, by name, including the sets of rate classes.
func SetType(family knftables.Family, name string) (Set, bool) {
	if family == knftables.BridgeFamily {
		return bridgeSetType(name)
	}
	for _, s := range baseSets {
		if s.Name == name {
			return s, true
		}
	}
	if name == fastpathSet.Name {
		return fastpathSet, true
	}
	var count uint64
	var unit, kind string
	if n, _ := fmt.Sscanf(strings.ReplaceAll(name, "_", " "), "rl %d %s %s", &count, &unit, &kind); n == 3 {
		rc := RateClass{Count: count, Unit: unit}
		for _, s := range DesiredRuleset([]RateClass{rc}, nil, nil).Sets {
			if s.Name == name {
				return s, true
			}
		}
	}
	if n, _ := fmt.Sscanf(strings.ReplaceAll(name, "_", " "), "climit %d %s", &count, &kind); n == 2 {
		for _, s := range DesiredRuleset(nil, []int{int(count)}, nil).Sets {
			if s.Name == name {
				return s, true
			}
		}
	}
	if n, _ := fmt.Sscanf(strings.ReplaceAll(name, "_", " "), "nc %d %s %s", &count, &unit, &kind); n == 3 || name == SetDropNewConnections {
		nc := NewConnClass{Count: count, Unit: unit}
		for _, s := range DesiredRuleset(nil, nil, []NewConnClass{nc}).Sets {
			if s.Name == name {
				return s, true
			}
		}
	}
	return Set{}, false
}
