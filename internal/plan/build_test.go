package plan

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"sigs.k8s.io/knftables"

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

const labConfig = `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
  - {name: test, mode: nat, subnet: 192.168.200.0/24}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", ip: 192.168.100.10, tap: web1-0}]
  - name: db1
    interfaces: [{network: dev, mac: "52:54:00:00:00:11", tap: db1-0, createTap: true}]
  - name: t1
    interfaces: [{network: test, mac: "52:54:00:00:00:20", tap: t1-0}]
`

const withForwards = `
networks:
  - name: dev
    mode: nat
    subnet: 192.168.100.0/24
    egress: eth0
    forwards:
      - {port: 8080, to: "web1:80"}
      - {proto: udp, port: 5000-5002, to: web1, from: [203.0.113.0/24, 198.51.100.7/32]}
      - {port: 2222, to: "192.168.100.10:22", rateLimit: 50/second}
  - {name: test, mode: nat, subnet: 192.168.200.0/24}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", ip: 192.168.100.10, tap: web1-0}]
  - name: db1
    interfaces: [{network: dev, mac: "52:54:00:00:00:11", tap: db1-0, createTap: true}]
  - name: t1
    interfaces: [{network: test, mac: "52:54:00:00:00:20", tap: t1-0}]
`

var withForwardsMinusOne = strings.Replace(withForwards, `      - {port: 8080, to: "web1:80"}
`, "", 1)

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

// simulate applies a plan to an Observed, the way the kernel would, so
// state-transition tests can chain plans without a kernel.
func simulate(obs *Observed, p *Plan) {
	for _, a := range p.Actions {
		l := obs.Links[a.Link()]
		switch a := a.(type) {
		case AddBridge:
			obs.Links[a.Link()] = Link{Name: a.Link(), Kind: "bridge", Alias: a.Alias, MTU: 1500}
		case AddTap:
			obs.Links[a.Link()] = Link{Name: a.Link(), Kind: "tuntap", Alias: a.Alias, MTU: 1500}
		case SetMTU:
			l.MTU = a.MTU
			obs.Links[a.Link()] = l
		case SetUp:
			l.Up = a.Up
			obs.Links[a.Link()] = l
		case SetMaster:
			l.Master = a.Master
			obs.Links[a.Link()] = l
		case AddAddr:
			l.Addrs = append(l.Addrs, a.Addr)
			obs.Links[a.Link()] = l
		case DelAddr:
			var keep []netip.Prefix
			for _, p := range l.Addrs {
				if p != a.Addr {
					keep = append(keep, p)
				}
			}
			l.Addrs = keep
			obs.Links[a.Link()] = l
		case SetSysctl:
			obs.Sysctls[a.Key] = a.Value
		case DelLink:
			delete(obs.Links, a.Link())
			for n, o := range obs.Links {
				if o.Master == a.Link() {
					o.Master = ""
					obs.Links[n] = o
				}
			}
		case SetIsolated:
			l.Isolated = a.On
			obs.Links[a.Link()] = l
		case Convert:
			l.Master = a.Uplink.Bridge
			obs.Links[a.Link()] = l
			br := obs.Links[a.Uplink.Bridge]
			br.Addrs = l.Addrs
			obs.Links[a.Uplink.Bridge] = br
			l.Addrs = nil
			obs.Links[a.Link()] = l
			obs.Hosts[a.Uplink.Bridge] = obs.Hosts[a.Link()]
			delete(obs.Hosts, a.Link())
		case Release:
			l.Master = ""
			br := obs.Links[a.Uplink.Bridge]
			l.Addrs, br.Addrs = br.Addrs, nil
			obs.Links[a.Link()] = l
			obs.Links[a.Uplink.Bridge] = br
			obs.Hosts[a.Link()] = a.Uplink.Config
			delete(obs.Hosts, a.Uplink.Bridge)
		case *NftChange:
			table := &obs.Table
			if a.Ruleset.Family == knftables.BridgeFamily {
				table = &obs.Bridge
			}
			switch {
			case a.Delete:
				*table = TableState{}
			case a.Rebuild:
				*table = TableState{Exists: true, Comment: a.Version, Chains: map[string][]string{}, Sets: Elements{}}
				for _, c := range a.Ruleset.Chains {
					table.Chains[c.Name] = []string{}
					for _, r := range c.Rules {
						table.Chains[c.Name] = append(table.Chains[c.Name], r.Comment)
					}
				}
				for _, s := range a.Ruleset.Sets {
					table.Sets[s.Name] = append([]Element{}, a.Elements[s.Name]...)
				}
			default:
				for set, els := range a.Del {
					table.Sets[set], _ = diff(els, table.Sets[set]) // what is left
				}
				for set, els := range a.Add {
					table.Sets[set] = append(table.Sets[set], els...)
				}
			}
		}
	}
}

// TestStates feeds a sequence of configs and checks each plan against a
// golden file, then that re-planning the same config is empty.
func TestStates(t *testing.T) {
	obs := hostOnly()
	orig := map[string]string{SysctlIPForward: "0"}
	steps := []struct{ name, doc string }{
		{"1-from-empty", labConfig},
		{"1b-forwards", withForwards},
		{"1c-one-forward-less", withForwardsMinusOne},
		{"2-drop-test-network", `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", ip: 192.168.100.10, tap: web1-0}]
`},
		{"3-new-subnet-and-mtu", `
networks:
  - {name: dev, mode: nat, subnet: 10.1.0.0/16, egress: eth0, mtu: 9000}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", tap: web1-0}]
`},
		{"4-empty", ``},
	}
	for _, s := range steps {
		p, err := Build(parse(t, s.doc), obs, Options{Originals: orig})
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		golden(t, s.name+".plan", p.String())
		simulate(obs, p)
		again, err := Build(parse(t, s.doc), obs, Options{Originals: orig})
		if err != nil {
			t.Fatal(err)
		}
		if !again.Empty() {
			t.Errorf("%s: second plan is not empty:\n%s", s.name, again)
		}
	}
	if d := cmp.Diff(hostOnly(), obs, cmpopts.EquateComparable(netip.Prefix{})); d != "" {
		t.Errorf("after the empty config the host differs from the start (-want +got):\n%s", d)
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

func TestDriftRebuildsOnlyWhatIsWrong(t *testing.T) {
	obs := hostOnly()
	cfg := parse(t, labConfig)
	p, _ := Build(cfg, obs, Options{})
	simulate(obs, p)
	// Someone deletes one rule: the table is rebuilt.
	obs.Table.Chains["forward"] = obs.Table.Chains["forward"][1:]
	p, _ = Build(cfg, obs, Options{})
	if len(p.Actions) != 1 || !isRebuild(p.Actions[0], knftables.InetFamily) {
		t.Fatalf("want one nft rebuild, got:\n%s", p)
	}
	simulate(obs, p)
	// Someone deletes one element: only that element comes back.
	obs.Table.Sets[SetNATIfs] = []Element{"kv-dev"}
	p, _ = Build(cfg, obs, Options{})
	if ch, ok := p.Actions[0].(*NftChange); len(p.Actions) != 1 || !ok || ch.Rebuild || !cmp.Equal(ch.Add, Elements{SetNATIfs: {"kv-test"}}) {
		t.Fatalf("want one element added, got:\n%s", p)
	}
}

// TestBridged converts the uplink for a hybrid config, finds nothing to do
// the second time, and gives the uplink back its configuration on destroy.
func TestBridged(t *testing.T) {
	obs := hostOnly()
	obs.Hosts = map[string]HostConfig{"eth0": {
		Addrs:  []HostAddr{{Prefix: netip.MustParsePrefix("172.30.0.2/24"), Broadcast: netip.MustParseAddr("172.30.0.255"), Label: "eth0", ValidLft: Forever, PreferredLft: Forever}},
		Routes: []HostRoute{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("172.30.0.1"), Table: 254, Protocol: 3}},
	}}
	l := obs.Links["eth0"]
	l.HWAddr = "02:00:00:00:00:02"
	l.MTU = 1500
	obs.Links["eth0"] = l
	orig := map[string]string{}
	doc := `
networks:
  - {name: lan, mode: bridged, uplink: eth0}
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
vms:
  - name: web1
    interfaces: [{network: lan, mac: "52:54:00:00:00:10", tap: web1-0}]
`
	p, err := Build(parse(t, doc), obs, Options{Originals: orig})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "bridged-1-convert.plan", p.String())
	for _, a := range p.Actions {
		if a, ok := a.(Convert); ok {
			v, err := EncodeUplink(a.Uplink)
			if err != nil {
				t.Fatal(err)
			}
			orig[UplinkOriginalKey(a.Link())] = v
		}
	}
	simulate(obs, p)
	if got := obs.Links["eth0"].Master; got != "kv-lan" {
		t.Fatalf("eth0's master after the plan: %q, want kv-lan", got)
	}
	p, err = Build(parse(t, doc), obs, Options{Originals: orig})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Empty() {
		t.Fatalf("second plan not empty:\n%s", p)
	}
	p, err = Build(parse(t, ""), obs, Options{Originals: orig})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "bridged-2-destroy.plan", p.String())
	simulate(obs, p)
	if l := obs.Links["eth0"]; l.Master != "" || len(l.Addrs) != 1 {
		t.Fatalf("eth0 after destroy: master %q, addresses %v; want no master and its address back", l.Master, l.Addrs)
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

// isRebuild reports whether a is a rebuild of the table of fam.
func isRebuild(a Action, fam knftables.Family) bool {
	ch, ok := a.(*NftChange)
	return ok && ch.Rebuild && ch.Ruleset.Family == fam
}

// TestSummaryCountsEveryOp checks that an op the summary does not list by
// name is still counted: a new kind of action must never vanish from it.
func TestSummaryCountsEveryOp(t *testing.T) {
	p := &Plan{Actions: []Action{&NftChange{}, qdisc{}, AddBridge{}, qdisc{}}}
	if got, want := p.Summary(), "1 add-bridge, 1 nft, 2 add-qdisc"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
}
