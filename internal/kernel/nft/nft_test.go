package nft

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// TestParseTable reads a real `nft -j list table inet kvmnet` (nft 1.0.6)
// taken after applying examples/lab.yaml (regenerate it when the ruleset
// changes: it pins the version).
func TestParseTable(t *testing.T) {
	data, err := os.ReadFile("testdata/lab-table.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseTable(data)
	if err != nil {
		t.Fatal(err)
	}
	want := plan.TableState{
		Exists:  true,
		Comment: "kvmnet ruleset 8cc10f9396b1", // as in the fixture
		Chains: map[string][]string{
			"guard":       {"forward-from-drop"},
			"prerouting":  {"forward"},
			"output":      {"forward-local"},
			"input":       {"guest-dhcp", "guest-dns", "guest-established", "guest-icmp", "guest-icmpv6", "guest-to-host-drop"},
			"forward":     {"established", "same-network", "forwarded", "between-networks-drop", "nat-egress", "into-nat-drop", "nat-elsewhere-drop"},
			"postrouting": {"hairpin", "masquerade"},
		},
		Sets: plan.Elements{
			"nat_ifs":        {"kv-dev", "kv-test"},
			"nat_same":       {"kv-dev . kv-dev", "kv-test . kv-test"},
			"nat_out":        {"kv-dev . eth0", "kv-test . eth0"},
			"masq":           {"192.168.100.0/24 . eth0", "192.168.200.0/24 . eth0"},
			"hairpin":        {"192.168.100.0/24 . kv-dev", "192.168.200.0/24 . kv-test"},
			"dnat4":          {},
			"fwd_restricted": {},
			"fwd_from":       {},
		},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestParseTableRejectsGarbage(t *testing.T) {
	if _, err := ParseTable([]byte("not json")); err == nil {
		t.Error("garbage parsed")
	}
}

// TestParseFlowtable reads a flowtable as nft 1.0.6 writes it in JSON,
// with one device and with several.
func TestParseFlowtable(t *testing.T) {
	doc := `{"nftables": [{"table": {"family": "inet", "name": "kvmnet", "handle": 1}},
{"flowtable": {"family": "inet", "name": "fastpath", "table": "kvmnet", "handle": 2, "hook": "ingress", "prio": 0, "dev": ["kv-dev", "eth0"]}},
{"flowtable": {"family": "inet", "name": "one", "table": "kvmnet", "handle": 3, "hook": "ingress", "prio": 0, "dev": "eth0"}}]}`
	st, err := ParseTable([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]plan.Flowtable{
		"fastpath": {Name: "fastpath", Devices: []string{"eth0", "kv-dev"}},
		"one":      {Name: "one", Devices: []string{"eth0"}},
	}
	if diff := cmp.Diff(want, st.Flowtables); diff != "" {
		t.Errorf("flowtables (-want +got):\n%s", diff)
	}
}
