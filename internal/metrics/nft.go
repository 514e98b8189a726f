package metrics

import (
	"encoding/json"
	"fmt"
)

// nftTable is the table whose drop rules ParseDropCounters reads: kvmnet's
// own (plan.TableName, family inet). Rules of other tables (docker's,
// libvirt's, firewalld's) in a whole-ruleset dump are not kvmnet's to count.
const (
	nftFamily = "inet"
	nftTable  = "kvmnet"
)

// ParseDropCounters reads the JSON of `nft -j list table inet kvmnet` (or
// of `nft -j list ruleset`) and returns, for every rule of table inet
// kvmnet that counts and drops, its packet count keyed by the rule's
// comment. In nft's text such a rule reads
//
//	oifname @nat_ifs counter packets 2 bytes 60 drop comment "into-nat-drop"
//
// A rule may count with an anonymous counter (as above) or a named one
// (`counter name "x"`), whose packets come from the table's counter objects.
// Rules without a comment are not kvmnet's fixed rules and are left out;
// rules sharing a comment are summed.
func ParseDropCounters(data []byte) (map[string]uint64, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parsing nft JSON: %w", err)
	}
	if doc.Nftables == nil {
		return nil, fmt.Errorf("parsing nft JSON: no \"nftables\" array")
	}
	// Named counters first: rules refer to them by name, and nft lists
	// them before the chains, but nothing promises that order.
	named := map[string]uint64{}
	for _, obj := range doc.Nftables {
		raw, ok := obj["counter"]
		if !ok {
			continue
		}
		var c struct {
			Family, Table, Name string
			Packets             uint64
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, fmt.Errorf("parsing nft counter object: %w", err)
		}
		if c.Family == nftFamily && c.Table == nftTable {
			named[c.Name] = c.Packets
		}
	}
	out := map[string]uint64{}
	for _, obj := range doc.Nftables {
		raw, ok := obj["rule"]
		if !ok {
			continue
		}
		var r struct {
			Family, Table, Chain, Comment string
			Handle                        int
			Expr                          []map[string]json.RawMessage
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, fmt.Errorf("parsing nft rule: %w", err)
		}
		if r.Family != nftFamily || r.Table != nftTable || r.Comment == "" {
			continue
		}
		packets, counts, drops, err := ruleCounter(r.Expr, named)
		if err != nil {
			return nil, fmt.Errorf("parsing nft rule %q (chain %s, handle %d): %w", r.Comment, r.Chain, r.Handle, err)
		}
		if counts && drops {
			out[r.Comment] += packets
		}
	}
	return out, nil
}

// ruleCounter looks through a rule's statements for a counter and a drop
// verdict. A counter is either {"counter": {"packets": N, "bytes": M}} or
// {"counter": "NAME"}; the verdict is {"drop": null}.
func ruleCounter(exprs []map[string]json.RawMessage, named map[string]uint64) (packets uint64, counts, drops bool, err error) {
	for _, e := range exprs {
		if _, ok := e["drop"]; ok {
			drops = true
		}
		raw, ok := e["counter"]
		if !ok {
			continue
		}
		counts = true
		var anon struct{ Packets uint64 }
		if err := json.Unmarshal(raw, &anon); err == nil {
			packets += anon.Packets
			continue
		}
		var name string
		if err := json.Unmarshal(raw, &name); err != nil {
			return 0, false, false, fmt.Errorf("counter %s is neither an object nor a name", raw)
		}
		v, ok := named[name]
		if !ok {
			return 0, false, false, fmt.Errorf("counter %q is not defined in the table", name)
		}
		packets += v
	}
	return packets, counts, drops, nil
}
