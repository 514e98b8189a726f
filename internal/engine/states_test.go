package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvmnet/kvmnet/internal/apply"
	"github.com/kvmnet/kvmnet/internal/apply/applytest"
	"github.com/kvmnet/kvmnet/internal/kernel/fake"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
	"github.com/kvmnet/kvmnet/internal/testutil/golden"
)

var _ Kernel = (*fake.Kernel)(nil)

// fakeHost is fake.LANHost: an uplink on a LAN and three taps libvirt
// made.
func fakeHost() *fake.Kernel { return fake.LANHost() }

func fakeEngine(t *testing.T, k Kernel) *Engine {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, store.File))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &Engine{Store: st, Kernel: k, Log: slog.New(slog.DiscardHandler), Journal: filepath.Join(dir, "journal")}
}

const natHost = `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
  - {name: test, mode: nat, subnet: 192.168.200.0/24, egress: eth0}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", ip: 192.168.100.10, tap: web1-0}]
  - name: db1
    interfaces: [{network: dev, mac: "52:54:00:00:00:11", tap: db1-0}]
  - name: t1
    interfaces: [{network: test, mac: "52:54:00:00:00:20", tap: t1-0, createTap: true}]
`

// states are the configs TestStates applies in turn, each with what it
// shows.
var states = []struct{ name, doc string }{
	{"nat", natHost},
	{"forwards", strings.Replace(natHost, "egress: eth0}\n  - {name: test", "egress: eth0, forwards: [{port: 8080, to: \"web1:80\"}, {proto: udp, port: 5000-5002, to: web1, from: [203.0.113.0/24]}]}\n  - {name: test", 1)},
	{"one-forward-less", strings.Replace(natHost, "egress: eth0}\n  - {name: test", "egress: eth0, forwards: [{port: 8080, to: \"web1:80\"}]}\n  - {name: test", 1)},
	{"ports-without-security", strings.Replace(natHost, "tap: db1-0}", "tap: db1-0, security: {spoofguard: false, isolated: true, maxConnections: 0}}", 1)},
	{"subnet-and-mtu-change", strings.Replace(strings.Replace(natHost, "{name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}", "{name: dev, mode: nat, subnet: 10.10.0.0/24, mtu: 9000, egress: eth0}", 1),
		"ip: 192.168.100.10", "ip: 10.10.0.10", 1)},
	{"port-moves-network", strings.Replace(strings.Replace(natHost, "{name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}", "{name: dev, mode: nat, subnet: 10.10.0.0/24, mtu: 9000, egress: eth0}", 1),
		"{network: dev, mac: \"52:54:00:00:00:10\", ip: 192.168.100.10, tap: web1-0}", "{network: test, mac: \"52:54:00:00:00:10\", tap: web1-0}", 1)},
	{"hybrid", hybridDoc()},
	{"nat-again", natHost},
	{"one-network", "networks:\n  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}\nvms:\n  - name: web1\n    interfaces: [{network: dev, mac: \"52:54:00:00:00:10\", tap: web1-0}]\n"},
}

// hybridDoc puts the bridged network in the networks list (states builds
// docs by string edits; this one needs the network first).
func hybridDoc() string {
	return strings.Replace(natHost, "networks:\n", "networks:\n  - {name: lan, mode: bridged, bridge: br0, uplink: eth0}\n", 1) +
		"  - name: app1\n    interfaces: [{network: lan, mac: \"52:54:00:00:00:30\", tap: app1-0}]\n"
}

// TestStates applies a sequence of configs through the engine to the fake
// kernel, without root: NAT, forwards added and removed, ports with and
// without security, a hybrid host with a bridged uplink, back, a network
// removed, destroy. After each: the kernel against a golden file, and the
// same config again changes nothing.
func TestStates(t *testing.T) { checkStates(t, fakeHost(), states, "") }

// checkStates applies seq in turn to k through the engine, each checked
// against testdata/states/PREFIX<N>-<name>.txt and applied twice, then
// destroys and expects k as it was.
func checkStates(t *testing.T, k *fake.Kernel, seq []struct{ name, doc string }, prefix string) {
	t.Helper()
	e := fakeEngine(t, k)
	ctx := context.Background()
	initial := k.Dump()
	for i, s := range seq {
		doc := s.doc
		cfg, err := model.Parse(s.name+".yaml", []byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if _, err := e.Apply(ctx, cfg, []byte(doc), ApplyOptions{AllowRemoval: true}); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		golden.Check(t, filepath.Join("testdata", "states", fmt.Sprintf("%s%d-%s.txt", prefix, i+1, s.name)), k.Dump())
		p, err := e.Plan(ctx, cfg)
		if err != nil || !p.Empty() {
			t.Fatalf("%s: applied twice, the second plan is not empty (%v):\n%s", s.name, err, p)
		}
	}
	if _, err := e.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if got := k.Dump(); got != initial {
		t.Errorf("destroy did not give the host back:\n--- before\n%s\n--- after\n%s", initial, got)
	}
}

// TestFakeRollbackAtEveryStep fails each kernel call of each transition
// of TestStates in turn, on the fake: the kernel must be as before the
// failed apply every time, and the stored state unchanged.
func TestFakeRollbackAtEveryStep(t *testing.T) { rollbackAtEveryStep(t, fakeHost(), states) }

// rollbackAtEveryStep fails each kernel call of each transition of seq
// in turn, on k.
func rollbackAtEveryStep(t *testing.T, k *fake.Kernel, seq []struct{ name, doc string }) {
	t.Helper()
	ctx := context.Background()
	total := 0
	for _, s := range seq {
		doc := s.doc
		cfg, err := model.Parse(s.name+".yaml", []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		before := k.Dump()
		for n := 1; ; n++ {
			f := &injecting{Failing: &applytest.Failing{K: k, N: n}, reads: k}
			e := fakeEngine(t, f)
			_, err := e.Apply(ctx, cfg, []byte(doc), ApplyOptions{AllowRemoval: true})
			if err == nil {
				if n == 1 {
					t.Fatalf("%s: the apply made no kernel calls", s.name)
				}
				total += n - 1
				break
			}
			var ae *apply.Error
			if !errors.As(err, &ae) || !errors.Is(err, applytest.ErrInjected) || ae.Rollback != nil {
				t.Fatalf("%s, call %d: want an injected failure rolled back cleanly, got %v", s.name, n, err)
			}
			if got := k.Dump(); got != before {
				t.Fatalf("%s: after a failure at call %d (%s) the kernel differs:\n--- before\n%s\n--- after\n%s", s.name, n, ae.Step.Op(), before, got)
			}
			if _, rev, _ := e.Store.Desired(); rev != 0 {
				t.Fatalf("%s: a failed apply stored revision %d", s.name, rev)
			}
		}
	}
	t.Logf("failed each of %d kernel calls in turn; each rolled back", total)
}

// injecting is the fake kernel with every apply.Kernel call going
// through a Failing and the engine's reads going to the fake directly.
// Neither half is the fake embedded whole, so a call cannot bypass the
// injection.
type injecting struct {
	*applytest.Failing
	reads
}

// reads is what Kernel has beyond apply.Kernel.
type reads interface {
	Observe(ctx context.Context, opt plan.ObserveOptions) (*plan.Observed, error)
	Listeners(keep func(proto string, port uint16) bool) ([]plan.Listener, error)
	LinkState(name string) (plan.Link, bool, error)
	DropCounters() (map[string]map[string]uint64, error)
	OffloadedFlows(subnets []netip.Prefix) (map[netip.Prefix]int, error)
	DefaultGateway() (netip.Addr, error)
}

// TestAttachPort adopts a tap that appears after the apply, through the
// planner's steps for one port; a failure halfway leaves it as it was.
func TestAttachPort(t *testing.T) {
	k := fakeHost()
	if err := k.DeleteLink("db1-0"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cfg, err := model.Parse("nat.yaml", []byte(natHost))
	if err != nil {
		t.Fatal(err)
	}
	e := fakeEngine(t, k)
	if _, err := e.Apply(ctx, cfg, []byte(natHost), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := k.AddTap("db1-0", plan.TapSpec{}, ""); err != nil {
		t.Fatal(err)
	}
	before := k.Dump()
	// A kernel that fails the second call (bringing the tap up).
	e.Kernel = &injecting{Failing: &applytest.Failing{K: k, N: 2}, reads: k}
	if _, err := e.AttachPort(ctx, "db1-0"); !errors.Is(err, applytest.ErrInjected) {
		t.Fatalf("AttachPort with a failing kernel: %v", err)
	}
	if got := k.Dump(); got != before {
		t.Fatalf("a failed adoption left the kernel changed:\n%s", got)
	}
	e.Kernel = k
	if done, err := e.AttachPort(ctx, "db1-0"); err != nil || !done {
		t.Fatalf("AttachPort: %v, %v", done, err)
	}
	if l, _, _ := k.LinkState("db1-0"); l.Master != "kv-dev" || !l.Up {
		t.Errorf("db1-0 after AttachPort: %+v", l)
	}
	if done, err := e.AttachPort(ctx, "db1-0"); err != nil || done {
		t.Errorf("AttachPort of an attached tap: %v, %v", done, err)
	}
}
