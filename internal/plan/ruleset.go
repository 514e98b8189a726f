package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/knftables"
)

// TableName is kvmnet's one nftables table (family inet). kvmnet never
// writes to any other table.
const TableName = "kvmnet"

// Set names. Rules look guests and networks up in these sets; adding a
// network or a guest adds elements, never rules.
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
)

// Chain is a base chain of the desired table with its fixed rules.
type Chain struct {
	Name     string
	Type     knftables.BaseChainType
	Hook     knftables.BaseChainHook
	Priority knftables.BaseChainPriority
	Rules    []Rule
}

// Rule is one fixed rule. Comment is its identity: the planner recognises
// rules by comment, never by their expressions.
type Rule struct {
	Rule    string
	Comment string
}

// Set is a named set of the desired table.
type Set struct {
	Name     string
	Type     string
	Interval bool
	Comment  string
}

// Chains are kvmnet's base chains. Every chain has policy accept: kvmnet
// only drops what concerns its own networks and never the host's other
// traffic. Rules are evaluated in order; each carries a comment saying why.
var Chains = []Chain{
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
			// Nothing crosses between two kvmnet networks.
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
			{`ip saddr . oifname @masq masquerade`, "masquerade"},
		},
	},
}

// Sets are the named sets of the desired table.
var Sets = []Set{
	{Name: SetNATIfs, Type: "ifname", Comment: "bridges of nat networks"}, // its comment is the version; see TableComment
	{Name: SetNATSame, Type: "ifname . ifname", Comment: "bridge . bridge"},
	{Name: SetNATOut, Type: "ifname . ifname", Comment: "bridge . egress"},
	{Name: SetMasq, Type: "ipv4_addr . ifname", Interval: true, Comment: "subnet . egress"},
}

// TableComment identifies the version of the fixed part of the ruleset
// (chains, rules, set definitions). When it differs from the kernel's, the
// table is rebuilt; otherwise only set elements are reconciled. It is
// written as the table's comment and as the comment of set nat_ifs, where
// it is read back: nft 1.0.6 leaves table comments out of its JSON.
var TableComment = func() string {
	h := sha256.New()
	for _, c := range Chains {
		fmt.Fprintf(h, "chain %s %s %s %s\n", c.Name, c.Type, c.Hook, c.Priority)
		for _, r := range c.Rules {
			fmt.Fprintf(h, "%s # %s\n", r.Rule, r.Comment)
		}
	}
	for _, s := range Sets {
		fmt.Fprintf(h, "set %s %s %t\n", s.Name, s.Type, s.Interval)
	}
	return "kvmnet ruleset " + hex.EncodeToString(h.Sum(nil))[:12]
}()

// Elements are set contents keyed by set name. Each element is written in
// the normalised form the observer produces: concatenation parts joined with
// " . ", strings unquoted, prefixes as a.b.c.d/n.
type Elements map[string][]string

// sorted returns a copy with every set sorted and deduplicated.
func (e Elements) sorted() Elements {
	out := Elements{}
	for k, v := range e {
		s := append([]string(nil), v...)
		sort.Strings(s)
		s = dedup(s)
		out[k] = s
	}
	return out
}

func dedup(s []string) []string {
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
	// Sets maps set name to its elements (normalised as in Elements).
	Sets Elements
}

// NftChange is the nftables part of a plan: either a rebuild of the whole
// table or element edits, always run as one transaction.
type NftChange struct {
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
		tx.Add(&knftables.Table{Comment: knftables.PtrTo(TableComment)})
		for _, s := range Sets {
			comment := s.Comment
			if s.Name == SetNATIfs {
				comment = TableComment
			}
			set := &knftables.Set{Name: s.Name, Type: s.Type, Comment: knftables.PtrTo(comment)}
			if s.Interval {
				set.Flags = []knftables.SetFlag{knftables.IntervalFlag}
			}
			tx.Add(set)
		}
		for _, ch := range Chains {
			tx.Add(&knftables.Chain{
				Name: ch.Name, Type: knftables.PtrTo(ch.Type), Hook: knftables.PtrTo(ch.Hook),
				Priority: knftables.PtrTo(ch.Priority), Policy: knftables.PtrTo(knftables.AcceptPolicy),
			})
			for _, r := range ch.Rules {
				tx.Add(&knftables.Rule{Chain: ch.Name, Rule: r.Rule, Comment: knftables.PtrTo(r.Comment)})
			}
		}
		addElements(tx, c.Elements, false)
		return
	}
	// Delete before add: an element that only changed its value would
	// otherwise collide with itself.
	addElements(tx, c.Del, true)
	addElements(tx, c.Add, false)
}

func addElements(tx *knftables.Transaction, e Elements, del bool) {
	for _, name := range sortedKeys(e) {
		typ := setType(name)
		for _, el := range e[name] {
			elem := &knftables.Element{Set: name, Key: quoteKey(typ, el)}
			if del {
				tx.Delete(elem)
			} else {
				tx.Add(elem)
			}
		}
	}
}

func setType(name string) string {
	for _, s := range Sets {
		if s.Name == name {
			return s.Type
		}
	}
	return ""
}

// quoteKey turns a normalised element into nft syntax: ifname parts quoted.
func quoteKey(typ, el string) []string {
	types := strings.Split(typ, " . ")
	parts := strings.Split(el, " . ")
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
