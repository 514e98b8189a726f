package apply_test

import (
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"slices"
	"testing"

	"github.com/kvmnet/kvmnet/internal/apply"
	"github.com/kvmnet/kvmnet/internal/apply/applytest"
	"github.com/kvmnet/kvmnet/internal/kernel"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

const before = `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", ip: 192.168.100.10, tap: web1-0}]
`

// after changes everything at once: a new subnet for dev, a second
// network, a created tap, a port moving between networks.
const after = `
networks:
  - {name: dev, mode: nat, subnet: 10.10.0.0/24, egress: eth0}
  - {name: test, mode: nat, subnet: 192.168.200.0/24, egress: eth0}
vms:
  - name: web1
    interfaces: [{network: test, mac: "52:54:00:00:00:10", tap: web1-0}]
  - name: db1
    interfaces: [{network: dev, mac: "52:54:00:00:00:11", tap: db1-0, createTap: true}]
`

// dump is the namespace's state, without the IPv6 link-local addresses
// and routes the kernel makes on its own timing (see
// nstest.WithoutLinkLocal).
func dump(t *testing.T, ns string) string { return nstest.WithoutLinkLocal(nstest.Dump(t, ns)) }

func parse(t *testing.T, doc string) *model.Config {
	t.Helper()
	cfg, err := model.Parse("test.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// egressNS returns a fresh namespace with the uplink NAT networks leave by:
// eth0, 172.30.0.2/24.
func egressNS(t *testing.T) string {
	ns := nstest.New(t)
	nstest.Run(t, ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
	nstest.Run(t, ns, "ip", "link", "set", "eth0", "up")
	nstest.Run(t, ns, "ip", "addr", "add", "172.30.0.2/24", "dev", "eth0")
	return ns
}

// applyDoc plans doc against what host observes and applies the plan
// through k (host itself, or a wrapper that injects failures).
func applyDoc(t *testing.T, host *kernel.Host, k apply.Kernel, doc string) error {
	t.Helper()
	ctx := context.Background()
	obs, err := host.Observe(ctx, plan.ObserveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(parse(t, doc), obs, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return apply.Apply(ctx, k, p, apply.Hooks{}, slog.New(slog.DiscardHandler))
}

// TestRollbackAtEveryStep fails an apply at each of its steps in turn, on a
// real kernel, and checks that the kernel is exactly as before each time.
func TestRollbackAtEveryStep(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft is not installed")
	}
	ns := egressNS(t)
	nstest.Run(t, ns, "ip", "link", "add", "web1-0", "type", "veth", "peer", "name", "web1-peer")
	nstest.Run(t, ns, "ip", "link", "set", "web1-0", "up")
	nstest.Enter(t, ns)

	host, err := kernel.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	run := func(k apply.Kernel, doc string) error { return applyDoc(t, host, k, doc) }
	if err := run(host, before); err != nil {
		t.Fatal(err)
	}
	// There and back: creations first, then deletions. Not as subtests:
	// those run on other goroutines, outside the namespace.
	everyStep(t, ns, host, run, after)
	everyStep(t, ns, host, run, before)
}

func everyStep(t *testing.T, ns string, host *kernel.Host, run func(apply.Kernel, string) error, to string) {
	ctx := context.Background()
	nstest.WaitDAD(t, ns)
	want, wantSem := dump(t, ns), nstest.SemanticDump(t, ns)
	// Undoing a deletion recreates the link (new ifindex, new link-local
	// address): once the plan deletes links, compare what matters to
	// traffic; otherwise the dumps must be identical.
	obs, err := host.Observe(ctx, plan.ObserveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(parse(t, to), obs, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	deletes := slices.ContainsFunc(p.Actions, func(a plan.Action) bool { return a.Op() == plan.OpDelLink })
	for n := 1; ; n++ {
		f := &applytest.Failing{K: host, N: n}
		err := run(f, to)
		if err == nil {
			if n == 1 {
				t.Fatal("the change made no kernel calls")
			}
			t.Logf("failed each of %d steps in turn; each rolled back", n-1)
			break
		}
		var ae *apply.Error
		if !errors.As(err, &ae) || !errors.Is(err, applytest.ErrInjected) || ae.Rollback != nil {
			t.Fatalf("step %d: want an injected failure rolled back cleanly, got %v", n, err)
		}
		if got := nstest.SemanticDump(t, ns); got != wantSem {
			t.Fatalf("after a failure at step %d (%s) the kernel differs from before:\n--- before\n%s\n--- after\n%s", n, ae.Step.Op(), wantSem, got)
		}
		if got := dump(t, ns); !deletes && got != want {
			t.Fatalf("after a failure at step %d (%s) the kernel differs from before:\n--- before\n%s\n--- after\n%s", n, ae.Step.Op(), want, got)
		}
	}
	// And the change itself converges: a second plan is empty.
	obs, err = host.Observe(ctx, plan.ObserveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err = plan.Build(parse(t, to), obs, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Empty() {
		t.Errorf("plan after a successful apply is not empty:\n%s", p)
	}
}
