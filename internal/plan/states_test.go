package plan_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/knftables"

	"github.com/kvmnet/kvmnet/internal/kernel/fake"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/testutil/golden"
)

// The fake-kernel tier, planner by planner: for each concern a sequence
// of files that adds, changes and removes what that planner plans. Each
// file is planned against the kernel in memory, every step is done on it
// (as apply does, without its runner), the plan is compared with a golden
// file under testdata/states/CONCERN/, and the same file planned again
// must change nothing. No root needed. internal/engine's TestStates runs
// whole hosts through the engine, with the kernel's state as goldens.

// host is a kernel with an uplink on a LAN, three taps libvirt made and
// ip_forward off.
func host() *fake.Kernel { return fake.LANHost() }

const (
	dev  = "  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0%s}\n"
	web1 = "  - name: web1\n    interfaces: [{network: dev, mac: \"52:54:00:00:00:10\", ip: 192.168.100.10, tap: web1-0%s}]\n"
	lan  = "  - {name: lan, mode: bridged, bridge: br0, uplink: eth0%s}\n"
	app1 = "  - name: app1\n    interfaces: [{network: lan, mac: \"52:54:00:00:00:30\", tap: app1-0}]\n"
)

// file makes a host file of network and VM lines.
func file(networks []string, vms ...string) string {
	s := "networks:\n" + strings.Join(networks, "")
	if len(vms) > 0 {
		s += "vms:\n" + strings.Join(vms, "")
	}
	return s
}

func net(format string, extra string) string { return fmt.Sprintf(format, extra) }

// db1 is a second guest of dev with a newConnections rate.
func db1(rate string) string {
	return fmt.Sprintf("  - name: db1\n    interfaces: [{network: dev, mac: \"52:54:00:00:00:11\", ip: 192.168.100.11, tap: db1-0, security: {newConnections: %s}}]\n", rate)
}

var concerns = []struct {
	name   string
	states []struct{ name, doc string }
}{
	{"bridges-and-addresses", []struct{ name, doc string }{
		{"nat-network", file([]string{net(dev, "")})},
		{"mtu", file([]string{net(dev, ", mtu: 9000")})},
		{"subnet", file([]string{"  - {name: dev, mode: nat, subnet: 10.10.0.0/24, mtu: 9000, egress: eth0}\n"})},
		{"second-network", file([]string{"  - {name: dev, mode: nat, subnet: 10.10.0.0/24, mtu: 9000, egress: eth0}\n", "  - {name: test, mode: nat, subnet: 192.168.200.0/24, egress: eth0}\n"})},
		{"first-removed", file([]string{"  - {name: test, mode: nat, subnet: 192.168.200.0/24, egress: eth0}\n"})},
	}},
	{"uplink", []struct{ name, doc string }{
		{"bridged", file([]string{net(lan, "")}, app1)},
		{"host-address-none", file([]string{net(lan, ", hostAddress: none")}, app1)},
		{"host-address-back", file([]string{net(lan, "")}, app1)},
		{"hybrid", file([]string{net(lan, ""), net(dev, "")}, app1, net(web1, ""))},
		{"bridged-removed", file([]string{net(dev, "")}, net(web1, ""))},
	}},
	{"ports", []struct{ name, doc string }{
		{"adopted", file([]string{net(dev, "")}, net(web1, ""))},
		{"isolated", file([]string{net(dev, "")}, net(web1, ", security: {isolated: true}"))},
		{"created-tap", file([]string{net(dev, "")}, net(web1, ", security: {isolated: true}"),
			"  - name: t1\n    interfaces: [{network: dev, mac: \"52:54:00:00:00:20\", tap: t1-0, createTap: true, queues: 4}]\n")},
		{"moves-network", file([]string{net(dev, ""), "  - {name: test, mode: nat, subnet: 192.168.200.0/24, egress: eth0}\n"},
			"  - name: web1\n    interfaces: [{network: test, mac: \"52:54:00:00:00:10\", tap: web1-0}]\n")},
		{"removed", file([]string{net(dev, ""), "  - {name: test, mode: nat, subnet: 192.168.200.0/24, egress: eth0}\n"})},
	}},
	{"tables", []struct{ name, doc string }{
		{"spoofguard", file([]string{net(dev, "")}, net(web1, ""))},
		{"spoofguard-off", file([]string{net(dev, "")}, net(web1, ", security: {spoofguard: false}"))},
		{"forwards", file([]string{net(dev, ", forwards: [{port: 8080, to: \"web1:80\"}, {proto: udp, port: 5000-5002, to: web1, from: [203.0.113.0/24]}]")}, net(web1, ""))},
		{"forward-changed", file([]string{net(dev, ", forwards: [{port: 8081, to: \"web1:80\"}, {proto: udp, port: 5000-5002, to: web1, from: [203.0.113.0/24]}]")}, net(web1, ""))},
		{"max-connections", file([]string{net(dev, "")}, net(web1, ", security: {maxConnections: 20}"))},
		// A new rate is a rule, so the table is rebuilt; a second guest
		// at that rate is an element, and a third at another is a rule.
		{"new-connections", file([]string{net(dev, "")}, net(web1, ", security: {maxConnections: 20, newConnections: 200/second}"))},
		{"new-connections-second-guest", file([]string{net(dev, "")}, net(web1, ", security: {maxConnections: 20, newConnections: 200/second}"), db1("200/second"))},
		{"new-connections-other-rate", file([]string{net(dev, "")}, net(web1, ", security: {maxConnections: 20, newConnections: 200/second}"), db1("30/minute"))},
		{"no-networks", file([]string{net(lan, "")})},
	}},
	{"fastpath", []struct{ name, doc string }{
		{"off", file([]string{net(dev, "")}, net(web1, ""))},
		{"on", file([]string{net(dev, ", fastpath: true")}, net(web1, ""))},
		{"off-again", file([]string{net(dev, "")}, net(web1, ""))},
	}},
	{"qos", []struct{ name, doc string }{
		{"rate", file([]string{net(dev, "")}, net(web1, ", qos: {ingress: 50mbit}"))},
		{"ceil-and-burst", file([]string{net(dev, "")}, net(web1, ", qos: {ingress: {rate: 50mbit, ceil: 200mbit, burst: 256kb}}"),
			"  - name: t1\n    interfaces: [{network: dev, mac: \"52:54:00:00:00:20\", tap: t1-0, createTap: true, qos: {ingress: 1gbit}}]\n")},
		{"removed", file([]string{net(dev, "")}, net(web1, ""),
			"  - name: t1\n    interfaces: [{network: dev, mac: \"52:54:00:00:00:20\", tap: t1-0, createTap: true, qos: {ingress: 1gbit}}]\n")},
		{"back", file([]string{net(dev, "")}, net(web1, ", qos: {ingress: 50mbit}"))},
		{"ports-leave", file([]string{net(dev, "")})},
	}},
	{"sysctls", []struct{ name, doc string }{
		{"nat-needs-forwarding", file([]string{net(dev, "")})},
		{"bridged-only-gives-it-back", file([]string{net(lan, "")})},
	}},
}

func TestPlannerStates(t *testing.T) {
	for _, c := range concerns {
		t.Run(c.name, func(t *testing.T) {
			k := host()
			orig := map[string]string{}
			hooks := plan.Hooks{
				BeforeSysctl: func(key, prev string) error {
					if _, ok := orig[key]; !ok {
						orig[key] = prev
					}
					return nil
				},
				BeforeConvert: func(uplink string, u plan.Uplink) error {
					key := plan.UplinkOriginalKey(uplink)
					if _, ok := orig[key]; ok {
						return nil
					}
					v, err := plan.EncodeUplink(u)
					orig[key] = v
					return err
				},
			}
			for i, s := range c.states {
				p := planApply(t, k, s.name, s.doc, orig, hooks)
				golden.Check(t, filepath.Join("testdata", "states", c.name, fmt.Sprintf("%d-%s.plan", i+1, s.name)), p.String())
				if again := planApply(t, k, s.name, s.doc, orig, hooks); !again.Empty() {
					t.Fatalf("%s: planned again after its steps were done, the plan is not empty:\n%s", s.name, again)
				}
			}
		})
	}
}

// planApply plans doc against k and does every step on it, forgetting
// originals that are back (as the engine does).
func planApply(t *testing.T, k *fake.Kernel, name, doc string, orig map[string]string, hooks plan.Hooks) *plan.Plan {
	t.Helper()
	ctx := context.Background()
	cfg, err := model.ParseStored(name+".yaml", []byte(doc))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	obs, err := k.Observe(ctx, plan.ObserveOptions{Hosts: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(cfg, obs, plan.Options{Originals: orig})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for _, a := range p.Actions {
		if _, err := a.Do(ctx, k, hooks); err != nil {
			t.Fatalf("%s: %s: %v", name, a, err)
		}
		switch a := a.(type) {
		case plan.Release:
			delete(orig, plan.UplinkOriginalKey(a.Name))
		case plan.SetSysctl:
			if orig[a.Key] == a.Value {
				delete(orig, a.Key)
			}
		}
	}
	return p
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

// withForwards is labConfig with forwards on dev.
var withForwards = strings.Replace(labConfig, "  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}\n", `  - name: dev
    mode: nat
    subnet: 192.168.100.0/24
    egress: eth0
    forwards:
      - {port: 8080, to: "web1:80"}
      - {proto: udp, port: 5000-5002, to: web1, from: [203.0.113.0/24, 198.51.100.7/32]}
      - {port: 2222, to: "192.168.100.10:22", rateLimit: 50/second}
`, 1)

var withForwardsMinusOne = strings.Replace(withForwards, `      - {port: 8080, to: "web1:80"}
`, "", 1)

// hostOnly is a host with an uplink and one veth of a guest's: no
// bridges, no tables, ip_forward off.
func hostOnly() *plan.Observed {
	return &plan.Observed{
		Links: map[string]plan.Link{
			"lo":     {Name: "lo", Kind: "device", Up: true},
			"eth0":   {Name: "eth0", Kind: "veth", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("172.30.0.2/24")}},
			"web1-0": {Name: "web1-0", Kind: "veth", Up: true},
		},
		DefaultRouteLink: "eth0",
		Sysctls:          map[string]string{plan.SysctlIPForward: "0"},
	}
}

// build plans doc against k.
func build(t *testing.T, k *fake.Kernel, doc string, orig map[string]string) *plan.Plan {
	t.Helper()
	cfg, err := model.ParseStored("host.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	obs, err := k.Observe(context.Background(), plan.ObserveOptions{Hosts: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(cfg, obs, plan.Options{Originals: orig})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// do does every step of p on k.
func do(k plan.Kernel, p *plan.Plan) error {
	for _, a := range p.Actions {
		if _, err := a.Do(context.Background(), k, plan.Hooks{}); err != nil {
			return fmt.Errorf("%s: %w", a, err)
		}
	}
	return nil
}

func mustDo(t *testing.T, k plan.Kernel, p *plan.Plan) {
	t.Helper()
	if err := do(k, p); err != nil {
		t.Fatal(err)
	}
}

// TestStates feeds a sequence of configs and checks each plan against a
// golden file, then that re-planning the same config is empty, and that
// the empty config leaves the host as it was.
func TestStates(t *testing.T) {
	k := fake.New(hostOnly())
	start := k.Dump()
	orig := map[string]string{plan.SysctlIPForward: "0"}
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
		p := build(t, k, s.doc, orig)
		golden.Check(t, filepath.Join("testdata", s.name+".plan"), p.String())
		mustDo(t, k, p)
		if again := build(t, k, s.doc, orig); !again.Empty() {
			t.Errorf("%s: second plan is not empty:\n%s", s.name, again)
		}
	}
	if got := k.Dump(); got != start {
		t.Errorf("after the empty config the host differs from the start:\n--- start\n%s\n--- now\n%s", start, got)
	}
}

func TestDriftRebuildsOnlyWhatIsWrong(t *testing.T) {
	k := fake.New(hostOnly())
	mustDo(t, k, build(t, k, labConfig, nil))
	// Someone deletes one rule: the table is rebuilt.
	k.Edit(func(o *plan.Observed) { o.Table.Chains["forward"] = o.Table.Chains["forward"][1:] })
	p := build(t, k, labConfig, nil)
	if ch, ok := p.Actions[0].(*plan.NftChange); len(p.Actions) != 1 || !ok || !ch.Rebuild || ch.Ruleset.Family != knftables.InetFamily {
		t.Fatalf("want one nft rebuild, got:\n%s", p)
	}
	mustDo(t, k, p)
	// Someone deletes one element: only that element comes back.
	k.Edit(func(o *plan.Observed) { o.Table.Sets[plan.SetNATIfs] = []plan.Element{"kv-dev"} })
	p = build(t, k, labConfig, nil)
	if ch, ok := p.Actions[0].(*plan.NftChange); len(p.Actions) != 1 || !ok || ch.Rebuild || !cmp.Equal(ch.Add, plan.Elements{plan.SetNATIfs: {"kv-test"}}) {
		t.Fatalf("want one element added, got:\n%s", p)
	}
}

// TestBridged converts the uplink for a hybrid config, finds nothing to do
// the second time, and gives the uplink back its configuration on destroy.
func TestBridged(t *testing.T) {
	obs := hostOnly()
	obs.Hosts = map[string]plan.HostConfig{"eth0": {
		Addrs:  []plan.HostAddr{{Prefix: netip.MustParsePrefix("172.30.0.2/24"), Broadcast: netip.MustParseAddr("172.30.0.255"), Label: "eth0", ValidLft: plan.Forever, PreferredLft: plan.Forever}},
		Routes: []plan.HostRoute{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("172.30.0.1"), Table: 254, Protocol: 3}},
	}}
	l := obs.Links["eth0"]
	l.HWAddr = "02:00:00:00:00:02"
	l.MTU = 1500
	obs.Links["eth0"] = l
	k := fake.New(obs)
	orig := map[string]string{}
	doc := `
networks:
  - {name: lan, mode: bridged, uplink: eth0}
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
vms:
  - name: web1
    interfaces: [{network: lan, mac: "52:54:00:00:00:10", tap: web1-0}]
`
	p := build(t, k, doc, orig)
	golden.Check(t, filepath.Join("testdata", "bridged-1-convert.plan"), p.String())
	for _, a := range p.Actions {
		if a, ok := a.(plan.Convert); ok {
			v, err := plan.EncodeUplink(a.Uplink)
			if err != nil {
				t.Fatal(err)
			}
			orig[plan.UplinkOriginalKey(a.Link())] = v
		}
	}
	mustDo(t, k, p)
	if got := link(t, k, "eth0").Master; got != "kv-lan" {
		t.Fatalf("eth0's master after the plan: %q, want kv-lan", got)
	}
	if p := build(t, k, doc, orig); !p.Empty() {
		t.Fatalf("second plan not empty:\n%s", p)
	}
	p = build(t, k, "", orig)
	golden.Check(t, filepath.Join("testdata", "bridged-2-destroy.plan"), p.String())
	mustDo(t, k, p)
	if l := link(t, k, "eth0"); l.Master != "" || len(l.Addrs) != 1 {
		t.Fatalf("eth0 after destroy: master %q, addresses %v; want no master and its address back", l.Master, l.Addrs)
	}
}

func link(t *testing.T, k *fake.Kernel, name string) plan.Link {
	t.Helper()
	l, ok, err := k.LinkState(name)
	if err != nil || !ok {
		t.Fatalf("link %s: %v (exists: %v)", name, err, ok)
	}
	return l
}

// TestClaimVLANLink: an egress VLAN link an apply created but was killed
// before marking (its name in the journal) is claimed and marked; one
// the journal does not name is someone else's and refused.
func TestClaimVLANLink(t *testing.T) {
	doc := "networks:\n  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0, egressVlan: 200}\n"
	cfg, err := model.Parse("host.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	k := fake.LANHost()
	if err := k.AddVLANLink("eth0.200", "eth0", 200, ""); err != nil {
		t.Fatal(err)
	}
	obs, err := k.Observe(context.Background(), plan.ObserveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.Build(cfg, obs, plan.Options{}); err == nil || !strings.Contains(err.Error(), `a link named "eth0.200" exists and is not kvmnet's VLAN 200 on eth0`) {
		t.Errorf("an unmarked VLAN link not in the journal: %v", err)
	}
	p, err := plan.Build(cfg, obs, plan.Options{Claim: map[string]bool{"eth0.200": true}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.String(), `ip link set eth0.200 alias "kvmnet:vlan=dev"`) || strings.Contains(p.String(), "ip link add link eth0") {
		t.Errorf("claiming eth0.200:\n%s", p)
	}
}
