package plan

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kvmnet/kvmnet/internal/model"
	goldenfile "github.com/kvmnet/kvmnet/internal/testutil/golden"
)

func parse(t *testing.T, doc string) *model.Config {
	t.Helper()
	cfg, err := model.ParseStored("host.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	goldenfile.Check(t, filepath.Join("testdata", name), got)
}

func hostOnly() *Observed {
	return &Observed{
		Links: map[string]Link{
			"lo":     {Name: "lo", Kind: "device", Up: true},
			"eth0":   {Name: "eth0", Kind: "veth", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("172.30.0.2/24")}},
			"web1-0": {Name: "web1-0", Kind: "veth", Up: true},
		},
		DefaultRouteLink: "eth0",
		Sysctls:          map[string]string{SysctlIPForward: "0"},
	}
}

func TestBuildErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
		obs             func(*Observed)
	}{
		{"egress missing", `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth9}
`, `host.yaml:3:`, nil},
		{"egress missing message", `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth9}
`, `egress interface "eth9" does not exist (interfaces: eth0, lo, web1-0)`, nil},
		{"no default route", `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24}
`, `no egress given and the host has no IPv4 default route`, func(o *Observed) { o.DefaultRouteLink = "" }},
		{"bridge taken", `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, bridge: virbr0}
`, `a link named "virbr0" exists and is not kvmnet's`, func(o *Observed) {
			o.Links["virbr0"] = Link{Name: "virbr0", Kind: "bridge"}
		}},
		{"forward to vm without ip", `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, forwards: [{port: 80, to: db1}]}
vms:
  - name: db1
    interfaces: [{network: dev, mac: "52:54:00:00:00:11", tap: db1-0}]
`, `forward to vm "db1": its interface on network "dev" has no ip:`, nil},
		{"forward on a port the host uses", `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, forwards: [{port: 22, to: "192.168.100.5"}]}
`, `host.yaml:3:72: networks[0].forwards[0].port: port 22/tcp is in use on the host: sshd (pid 7) listens on 0.0.0.0:22; forward another port, or set force: true`, func(o *Observed) {
			o.Listeners = []Listener{{Proto: "tcp", Addr: netip.IPv4Unspecified(), Port: 22, Process: "sshd (pid 7)"}}
		}},
		{"uplink missing", `
networks:
  - {name: lan, mode: bridged, uplink: eth9}
`, `host.yaml:3:40: networks[0].uplink: network "lan": uplink "eth9" does not exist (interfaces: eth0, lo, web1-0)`, nil},
		{"uplink enslaved elsewhere", `
networks:
  - {name: lan, mode: bridged, uplink: eth0}
`, `uplink "eth0" is already a port of "docker0"; an interface can be enslaved to one bridge only`, func(o *Observed) {
			l := o.Links["eth0"]
			l.Master = "docker0"
			o.Links["eth0"] = l
			o.Links["docker0"] = Link{Name: "docker0", Kind: "bridge"}
		}},
		{"uplink is a bridge", `
networks:
  - {name: lan, mode: bridged, uplink: docker0}
`, `uplink "docker0" is a bridge, not a physical interface`, func(o *Observed) {
			o.Links["docker0"] = Link{Name: "docker0", Kind: "bridge"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := hostOnly()
			if tc.obs != nil {
				tc.obs(obs)
			}
			_, err := Build(parse(t, tc.doc), obs, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestDiff(t *testing.T) {
	for _, tt := range []struct{ have, want, add, del []string }{
		{nil, nil, nil, nil},
		{[]string{"a", "b"}, []string{"a", "b"}, nil, nil},
		{nil, []string{"a", "b"}, []string{"a", "b"}, nil},
		{[]string{"a", "b"}, nil, nil, []string{"a", "b"}},
		{[]string{"a", "c", "e"}, []string{"b", "c", "d", "f"}, []string{"b", "d", "f"}, []string{"a", "e"}},
		{[]string{"b"}, []string{"a", "b", "c"}, []string{"a", "c"}, nil},
	} {
		add, del := diff(tt.have, tt.want)
		if !slices.Equal(add, tt.add) || !slices.Equal(del, tt.del) {
			t.Errorf("diff(%q, %q) = %q, %q; want %q, %q", tt.have, tt.want, add, del, tt.add, tt.del)
		}
	}
}

// qdisc is a step of a kind the summary does not know.
type qdisc struct{ AddBridge }

func (qdisc) Op() Op { return "add-qdisc" }

// TestSummaryCountsEveryOp checks that an op the summary does not list by
// name is still counted: a new kind of action must never vanish from it.
func TestSummaryCountsEveryOp(t *testing.T) {
	p := &Plan{Actions: []Action{&NftChange{}, qdisc{}, AddBridge{}, qdisc{}}}
	if got, want := p.Summary(), "1 add-bridge, 1 nft, 2 add-qdisc"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
}
