package plan_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kvmnet/kvmnet/internal/kernel/fake"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// Benchmarks of the planner and the ruleset renderer at 1,000 and 10,000
// VM interfaces, run with allocations:
//
//	go test -run '^$' -bench . -benchmem ./internal/plan/
//
// The interfaces are on one NAT network, each with a reserved address,
// spoofguard on (the default) and a tap kvmnet creates, so every per-port
// structure the planner knows is filled.

// benchSizes are the interface counts benchmarked.
var benchSizes = []int{1000, 10000}

// benchDoc is a host file with n interfaces.
func benchDoc(n int) string {
	var b strings.Builder
	b.WriteString("networks:\n  - {name: bench, mode: nat, subnet: 10.200.0.0/16, egress: eth0}\nvms:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: vm%d\n    interfaces: [{network: bench, mac: \"52:54:00:%02x:%02x:%02x\", ip: 10.200.%d.%d, tap: b%d, createTap: true}]\n",
			i, i>>16&0xff, i>>8&0xff, i&0xff, 1+i/250, 1+i%250, i)
	}
	return b.String()
}

// benchState is what the benchmarks of one size share: the config, and an
// observation of the kernel that matches it (the plan from empty done on the
// kernel in memory), built once since parsing 10,000 interfaces takes a while.
type benchState struct {
	cfg, cfgPlusOne *model.Config
	empty, matching *plan.Observed
	fromEmpty       *plan.Plan
}

var benchStates = map[int]func() (*benchState, error){}

func init() {
	for _, n := range benchSizes {
		benchStates[n] = sync.OnceValues(func() (*benchState, error) { return newBenchState(n) })
	}
}

func newBenchState(n int) (*benchState, error) {
	s := &benchState{}
	var err error
	if s.cfg, err = model.Parse("bench.yaml", []byte(benchDoc(n))); err != nil {
		return nil, err
	}
	if s.cfgPlusOne, err = model.Parse("bench.yaml", []byte(benchDoc(n+1))); err != nil {
		return nil, err
	}
	s.empty = hostOnly()
	if s.fromEmpty, err = plan.Build(s.cfg, hostOnly(), plan.Options{}); err != nil {
		return nil, err
	}
	k := fake.New(hostOnly())
	if err := do(k, s.fromEmpty); err != nil {
		return nil, err
	}
	if s.matching, err = k.Observe(context.Background(), plan.ObserveOptions{}); err != nil {
		return nil, err
	}
	p, err := plan.Build(s.cfg, s.matching, plan.Options{Originals: map[string]string{plan.SysctlIPForward: "0"}})
	if err != nil {
		return nil, err
	}
	if !p.Empty() {
		return nil, fmt.Errorf("the kernel in memory does not match the config after the plan from empty: re-plan has %d actions, first %q", len(p.Actions), p.Actions[0])
	}
	return s, nil
}

func benchSetup(b *testing.B, n int) *benchState {
	b.Helper()
	s, err := benchStates[n]()
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkBuild times plan.Build: from an empty host, on a host that
// already matches (the no-op apply and the daemon's resync pass), and with
// one interface more than the host has.
func BenchmarkBuild(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("from-empty/%d", n), func(b *testing.B) {
			s := benchSetup(b, n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := plan.Build(s.cfg, s.empty, plan.Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("matching/%d", n), func(b *testing.B) {
			s := benchSetup(b, n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := plan.Build(s.cfg, s.matching, plan.Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("add-one/%d", n), func(b *testing.B) {
			s := benchSetup(b, n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := plan.Build(s.cfgPlusOne, s.matching, plan.Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRender times printing the plan from empty (`kvmnet plan`), and
// rendering its nftables transactions alone (the text `nft -f` reads).
func BenchmarkRender(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("plan/%d", n), func(b *testing.B) {
			s := benchSetup(b, n)
			b.ReportAllocs()
			for b.Loop() {
				_ = s.fromEmpty.String()
			}
		})
		b.Run(fmt.Sprintf("nft/%d", n), func(b *testing.B) {
			s := benchSetup(b, n)
			var nft []plan.Action
			for _, a := range s.fromEmpty.Actions {
				if a.Op() == plan.OpNft {
					nft = append(nft, a)
				}
			}
			if len(nft) == 0 {
				b.Fatal("the plan from empty has no nft action")
			}
			b.ReportAllocs()
			bytes := 0
			for b.Loop() {
				bytes = 0
				for _, a := range nft {
					bytes += len(a.String())
				}
			}
			b.ReportMetric(float64(bytes), "nft-bytes")
		})
	}
}
