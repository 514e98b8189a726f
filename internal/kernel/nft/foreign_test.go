package nft

import (
	"slices"
	"testing"
)

// TestReadRules: what `nft -j list chain` shows of iptables-nft's
// MASQUERADE target, nft's own masquerade, and rules naming a bridge.
func TestReadRules(t *testing.T) {
	for _, tc := range []struct {
		name, json    string
		mentions, src []string
	}{{
		name:     "iptables -t nat -A POSTROUTING -s 192.168.100.0/24 -j MASQUERADE",
		json:     `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"chain": {"family": "ip", "table": "nat", "name": "POSTROUTING", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}, {"rule": {"family": "ip", "table": "nat", "chain": "POSTROUTING", "handle": 2, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "192.168.100.0", "len": 24}}}}, {"counter": {"packets": 0, "bytes": 0}}, {"xt": {"type": "target", "name": "MASQUERADE"}}]}}]}`,
		src:      []string{"192.168.100.0/24"},
		mentions: nil,
	}, {
		name: "nft add rule ip foo post masquerade",
		json: `{"nftables": [{"rule": {"family": "ip", "table": "foo", "chain": "post", "handle": 2, "expr": [{"masquerade": null}]}}]}`,
		src:  []string{""},
	}, {
		name:     `iifname "kv-dev" accept`,
		json:     `{"nftables": [{"rule": {"family": "inet", "table": "firewalld", "chain": "filter_FORWARD", "handle": 9, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "kv-dev"}}, {"accept": null}]}}]}`,
		mentions: []string{"kv-dev"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			m, src, err := readRules([]byte(tc.json), []string{"kv-dev", "kv-test"})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(m, tc.mentions) || !slices.Equal(src, tc.src) {
				t.Errorf("mentions %q, masquerades %q; want %q, %q", m, src, tc.mentions, tc.src)
			}
		})
	}
}
