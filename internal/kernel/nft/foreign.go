package nft

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/kvmnet/kvmnet/internal/doctor"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// ForeignChains lists the base chains of every table that is not
// kvmnet's (`nft -j list chains`: no rules, cheap with Docker's hundreds).
// Only the chains the doctor judges are read in full, one `nft -j list
// chain` each: forward chains with policy drop (do their rules name
// bridges?) and nat chains at postrouting (whom do they masquerade?).
func (n *NFT) ForeignChains(ctx context.Context, bridges []string) ([]doctor.Chain, error) {
	out, err := n.run(ctx, "", "-j", "list", "chains")
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	var doc struct {
		Nftables []struct {
			Chain *struct {
				Family, Table, Name, Type, Hook, Policy string
				Prio                                    int
			} `json:"chain"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("reading nft -j list chains: %w", err)
	}
	var chains []doctor.Chain
	for _, o := range doc.Nftables {
		c := o.Chain
		if c == nil || c.Hook == "" || c.Table == plan.TableName {
			continue
		}
		ch := doctor.Chain{Family: c.Family, Table: c.Table, Name: c.Name, Type: c.Type, Hook: c.Hook, Priority: c.Prio, Policy: c.Policy}
		dropForward := c.Hook == "forward" && c.Policy == "drop"
		masq := c.Type == "nat" && c.Hook == "postrouting"
		if dropForward || masq {
			rules, err := n.run(ctx, "", "-j", "list", "chain", c.Family, c.Table, c.Name)
			if err != nil {
				return nil, fmt.Errorf("listing nftables chain %s %s %s: %w", c.Family, c.Table, c.Name, err)
			}
			if ch.Mentions, ch.Masquerades, err = readRules([]byte(rules), bridges); err != nil {
				return nil, fmt.Errorf("reading nftables chain %s %s %s: %w", c.Family, c.Table, c.Name, err)
			}
		}
		chains = append(chains, ch)
	}
	return chains, nil
}

// readRules returns the bridges a chain's rules name (as a JSON string:
// iifname "kv-dev") and the sources of its masquerade rules, both
// nft's own masquerade and iptables-nft's xt MASQUERADE target; "" for
// one that masquerades every source.
func readRules(data []byte, bridges []string) (mentions, masq []string, err error) {
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Expr []map[string]json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, err
	}
	for _, o := range doc.Nftables {
		if o.Rule == nil {
			continue
		}
		src, masquerades := "", false
		for _, e := range o.Rule.Expr {
			for kind, v := range e {
				switch kind {
				case "masquerade":
					masquerades = true
				case "xt":
					var xt struct{ Type, Name string }
					if json.Unmarshal(v, &xt) == nil && xt.Type == "target" && xt.Name == "MASQUERADE" {
						masquerades = true
					}
				case "match":
					if s := saddr(v); s != "" {
						src = s
					}
				}
				for _, br := range bridges {
					if slices.Contains(mentions, br) {
						continue
					}
					if q, _ := json.Marshal(br); bytes.Contains(v, q) {
						mentions = append(mentions, br)
					}
				}
			}
		}
		if masquerades {
			masq = append(masq, src)
		}
	}
	return mentions, masq, nil
}

// saddr returns the source address or prefix an "ip saddr" match tests.
func saddr(raw json.RawMessage) string {
	var m struct {
		Op   string `json:"op"`
		Left struct {
			Payload struct{ Protocol, Field string } `json:"payload"`
		} `json:"left"`
		Right json.RawMessage `json:"right"`
	}
	if json.Unmarshal(raw, &m) != nil || m.Left.Payload.Field != "saddr" || m.Op == "!=" {
		return ""
	}
	var addr string
	if json.Unmarshal(m.Right, &addr) == nil {
		return addr
	}
	var p struct {
		Prefix struct {
			Addr string
			Len  int
		} `json:"prefix"`
	}
	if json.Unmarshal(m.Right, &p) == nil && p.Prefix.Addr != "" {
		return p.Prefix.Addr + "/" + strconv.Itoa(p.Prefix.Len)
	}
	return ""
}
