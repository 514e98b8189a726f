package engine

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/kvmnet/kvmnet/internal/kernel/feature"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// TestFastpathRefusedByKernel: on a kernel without flowtables (this CI
// kernel), applying fastpath: true on a host kvmnet already runs is
// refused at the key, with the kernel's own reason, and the namespace is
// left exactly as it was. Kernels with flowtables run
// TestFastpathOffloadsNAT instead.
func TestFastpathRefusedByKernel(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft is not installed")
	}
	nstest.RequireRoot(t)
	why := feature.Check(plan.FeatureFlowtable)
	if why == nil {
		t.Skip("this kernel has flowtables")
	}
	ns := egressNS(t)
	e, _ := realEngine(t, ns)
	ctx := context.Background()
	without := "networks:\n  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}\n"
	with := strings.Replace(without, "egress: eth0}", "egress: eth0, fastpath: true}", 1)
	cfg, err := model.Parse("host.yaml", []byte(without))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, cfg, []byte(without), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	// IPv6 link-local routes come and go with the kernel's own timing
	// (a bridge brought up by the first apply gets one when it may):
	// the state as it matters to traffic is compared.
	before := nstest.SemanticDump(t, ns)
	cfg, err = model.Parse("host.yaml", []byte(with))
	if err != nil {
		t.Fatal(err)
	}
	want := "host.yaml:2:78: networks[0].fastpath: fastpath needs nftables flowtables, which this kernel lacks (" + why.Error() + "); remove fastpath, or run a kernel that has it"
	if _, err := e.Apply(ctx, cfg, []byte(with), ApplyOptions{}); err == nil || err.Error() != want {
		t.Fatalf("apply with fastpath: true:\n got %v\nwant %s", err, want)
	}
	if after := nstest.SemanticDump(t, ns); after != before {
		t.Errorf("the refused apply changed the namespace:\n--- before\n%s\n--- after\n%s", before, after)
	}
	if _, err := e.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
}
