package plan_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

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
		{"no-networks", file([]string{net(lan, "")})},
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
