package plan_test

import (
	"context"
	"slices"
	"testing"

	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// fastpathOn has the fast path on network dev (see the "fastpath"
// concern of TestPlannerStates for it turned on and off).
var fastpathOn = file([]string{net(dev, ", fastpath: true")}, net(web1, ""))

// TestFastpathDeviceGone: a flowtable device the kernel dropped (the
// bridge was deleted and made again, the kernel takes it out of the
// flowtable) makes the table rebuilt.
func TestFastpathDeviceGone(t *testing.T) {
	k := host()
	planApply(t, k, "on", fastpathOn, map[string]string{}, plan.Hooks{})
	k.Edit(func(o *plan.Observed) {
		ft := o.Table.Flowtables[plan.FlowtableName]
		if !slices.Equal(ft.Devices, []string{"eth0", "kv-dev"}) {
			t.Fatalf("flowtable devices %q, want eth0 kv-dev", ft.Devices)
		}
		ft.Devices = []string{"eth0"}
		o.Table.Flowtables[plan.FlowtableName] = ft
	})
	p := planApply(t, k, "on", fastpathOn, map[string]string{}, plan.Hooks{})
	if len(p.Actions) != 1 {
		t.Fatalf("want one rebuild of the table, got:\n%s", p)
	}
	if ch, ok := p.Actions[0].(*plan.NftChange); !ok || !ch.Rebuild {
		t.Errorf("want one rebuild of the table, got:\n%s", p)
	}
}

// TestFastpathRefused: on a kernel without flowtables, fastpath: is
// refused where it is written (or at the host's default, once), with the
// kernel's reason, and nothing is planned.
func TestFastpathRefused(t *testing.T) {
	const why = "an nftables flowtable: the kernel knows no flowtable type (no such file or directory)"
	for _, tc := range []struct{ name, doc, want string }{
		{"network", fastpathOn, `host.yaml:2:78: networks[0].fastpath: fastpath needs nftables flowtables, which this kernel lacks (` + why + `); remove fastpath, or run a kernel that has it`},
		{"host", "host: {fastpath: true}\n" + file([]string{net(dev, "")}, net(web1, "")), `host.yaml:1:18: host.fastpath: fastpath needs nftables flowtables, which this kernel lacks (` + why + `); remove fastpath, or run a kernel that has it`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := model.ParseStored("host.yaml", []byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if got := plan.NeededFeatures(cfg); len(got) != 1 || got[0] != plan.FeatureFlowtable {
				t.Errorf("NeededFeatures = %v, want [%s]", got, plan.FeatureFlowtable)
			}
			k := host()
			k.Lacks = map[plan.Feature]string{plan.FeatureFlowtable: why}
			obs, err := k.Observe(context.Background(), plan.ObserveOptions{Features: plan.NeededFeatures(cfg)})
			if err != nil {
				t.Fatal(err)
			}
			p, err := plan.Build(cfg, obs, plan.Options{})
			if err == nil {
				t.Fatalf("planned:\n%s", p)
			}
			if errs := model.Errors(err); len(errs) != 1 {
				t.Errorf("%d errors, want 1: %v", len(errs), err)
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n got %s\nwant %s", err, tc.want)
			}
		})
	}
}
