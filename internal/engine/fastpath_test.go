package engine

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/testutil/golden"
)

// fastpathHost is natHost with the fast path on network dev.
var fastpathHost = strings.Replace(natHost, "subnet: 192.168.100.0/24, egress: eth0}", "subnet: 192.168.100.0/24, egress: eth0, fastpath: true}", 1)

// TestFastpathStates turns the fast path on and off on the fake kernel:
// the flowtable over dev's bridge and egress comes and goes, and each
// apply leaves nothing to do. The status shows the fast path and the
// flows it offloads.
func TestFastpathStates(t *testing.T) {
	k := fakeHost()
	k.Offloaded = map[netip.Prefix]int{netip.MustParsePrefix("192.168.100.0/24"): 3}
	e := fakeEngine(t, k)
	ctx := context.Background()
	for i, s := range []struct{ name, doc string }{
		{"nat", natHost},
		{"fastpath-on", fastpathHost},
		{"fastpath-off", natHost},
	} {
		cfg, err := model.Parse(s.name+".yaml", []byte(s.doc))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if _, err := e.Apply(ctx, cfg, []byte(s.doc), ApplyOptions{}); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		golden.Check(t, filepath.Join("testdata", "fastpath", fmt.Sprintf("%d-%s.txt", i+1, s.name)), k.Dump())
		if p, err := e.Plan(ctx, cfg); err != nil || !p.Empty() {
			t.Fatalf("%s: applied twice, the second plan is not empty (%v):\n%s", s.name, err, p)
		}
		st, err := e.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		on := s.name == "fastpath-on"
		for _, n := range st.Networks {
			want := NetworkStatus{Fastpath: on && n.Name == "dev"}
			if want.Fastpath {
				want.Offloaded = 3
			}
			if n.Fastpath != want.Fastpath || n.Offloaded != want.Offloaded {
				t.Errorf("%s: network %s: fastpath %t, %d offloaded; want %t, %d", s.name, n.Name, n.Fastpath, n.Offloaded, want.Fastpath, want.Offloaded)
			}
		}
	}
}

// TestFastpathRefused: on a kernel without flowtables, an apply that
// turns the fast path on is refused at plan time, at the key's
// file:line:column with the kernel's reason, and changes nothing: not the
// kernel, not the stored revision.
func TestFastpathRefused(t *testing.T) {
	const why = "an nftables flowtable: the kernel knows no flowtable type (no such file or directory)"
	k := fakeHost()
	k.Lacks = map[plan.Feature]string{plan.FeatureFlowtable: why}
	e := fakeEngine(t, k)
	ctx := context.Background()
	cfg, err := model.Parse("host.yaml", []byte(natHost))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, cfg, []byte(natHost), ApplyOptions{}); err != nil {
		t.Fatalf("a file without fastpath on that kernel: %v", err)
	}
	before, calls := k.Dump(), k.Calls
	_, rev, err := e.Desired()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"network", fastpathHost, "host.yaml:3:78: networks[0].fastpath: fastpath needs nftables flowtables, which this kernel lacks (" + why + "); remove fastpath, or run a kernel that has it"},
		{"host", "host:\n  fastpath: true\n" + natHost, "host.yaml:2:13: host.fastpath: fastpath needs nftables flowtables, which this kernel lacks (" + why + "); remove fastpath, or run a kernel that has it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := model.Parse("host.yaml", []byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.Plan(ctx, cfg); err == nil || err.Error() != tc.want {
				t.Errorf("plan: got %v\nwant %s", err, tc.want)
			}
			if _, err := e.Apply(ctx, cfg, []byte(tc.doc), ApplyOptions{}); err == nil || err.Error() != tc.want {
				t.Errorf("apply: got %v\nwant %s", err, tc.want)
			}
			if got := k.Dump(); got != before || k.Calls != calls {
				t.Errorf("the refused apply changed the kernel (%d calls):\n--- before\n%s\n--- after\n%s", k.Calls-calls, before, got)
			}
			if _, got, _ := e.Desired(); got != rev {
				t.Errorf("the refused apply stored revision %d (was %d)", got, rev)
			}
		})
	}
}
