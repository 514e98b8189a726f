package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
)

const vlanHost = `
networks:
  - {name: lan, mode: bridged, bridge: br0, uplink: eth0, vlans: true}
vms:
  - name: web1
    interfaces: [{network: lan, mac: "52:54:00:00:00:10", tap: web1-0, vlan: 10}]
  - name: db1
    interfaces: [{network: lan, mac: "52:54:00:00:00:11", tap: db1-0, vlan: 10}]
  - name: app1
    interfaces: [{network: lan, mac: "52:54:00:00:00:30", tap: app1-0, vlan: 20}]
  - name: t1
    interfaces: [{network: lan, mac: "52:54:00:00:00:40", tap: t1-0, createTap: true}]
`

// vlanStates: access ports on a VLAN-aware bridge (and one without
// vlan:, on the untagged LAN), a port's VLAN changed and a trunk, a nat
// network leaving through a VLAN link of the bridge, and VLANs off again.
var vlanStates = []struct{ name, doc string }{
	{"access", vlanHost},
	{"change-and-trunk", strings.NewReplacer(
		"tap: web1-0, vlan: 10}", "tap: web1-0, vlan: 30}",
		"tap: app1-0, vlan: 20}", "tap: app1-0, vlan: {tagged: [10, 20-22], untagged: 100}, security: {spoofguard: false}}").Replace(vlanHost)},
	{"uplink-vlans-and-egress", strings.NewReplacer(
		"vlans: true}", "vlans: true, uplinkVlans: [10, 20]}\n  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0, egressVlan: 200}").Replace(vlanHost)},
	{"vlans-off", strings.NewReplacer(", vlans: true", "", ", vlan: 10", "", ", vlan: 20", "").Replace(vlanHost)},
}

// TestVLANStates applies vlanStates to the fake kernel: the bridge's
// filtering, each port's VLANs (no port keeps the default PVID 1 unless
// it sits on the untagged LAN), the uplink's, the VLAN link, against
// goldens; each applied twice changes nothing; destroy gives the host
// back.
func TestVLANStates(t *testing.T) { checkStates(t, fakeHost(), vlanStates, "vlan-") }

// TestVLANRollbackAtEveryStep fails each kernel call of each VLAN
// transition in turn: the fake is as before every time.
func TestVLANRollbackAtEveryStep(t *testing.T) { rollbackAtEveryStep(t, fakeHost(), vlanStates) }

// TestVLANsRefusedWhereMissing: on a kernel without bridge VLAN filtering
// and 802.1Q (this machine's, in the fake), vlans: true and egressVlan are
// refused at plan time, each at its key's file:line:column with the
// kernel's reason, and nothing changes.
func TestVLANsRefusedWhereMissing(t *testing.T) {
	k := fakeHost()
	k.Lacks = map[plan.Feature]string{
		plan.FeatureBridgeVLAN: "a bridge with vlan_filtering 1: operation not supported",
		plan.FeatureVLAN:       `an 802.1Q interface (type vlan): unknown link kind "vlan"`,
	}
	e := fakeEngine(t, k)
	doc := vlanStates[2].doc
	cfg, err := model.Parse("host.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	before, calls := k.Dump(), k.Calls
	_, err = e.Apply(context.Background(), cfg, []byte(doc), ApplyOptions{})
	if err == nil {
		t.Fatal("the apply went through on a kernel without VLANs")
	}
	for _, want := range []string{
		`host.yaml:3:66: networks[0].vlans: vlans: true needs bridge VLAN filtering, which this kernel lacks (a bridge with vlan_filtering 1: operation not supported); remove vlans: true, or run a kernel that has it`,
		`host.yaml:4:80: networks[1].egressVlan: egressVlan needs 802.1Q VLAN interfaces, which this kernel lacks (an 802.1Q interface (type vlan): unknown link kind "vlan"); remove egressVlan, or run a kernel that has it`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error\n%v\ndoes not say\n%s", err, want)
		}
	}
	if k.Calls != calls || k.Dump() != before {
		t.Errorf("a refused apply changed the kernel:\n%s", k.Dump())
	}
	if _, rev, _ := e.Store.Desired(); rev != 0 {
		t.Errorf("a refused apply stored revision %d", rev)
	}
}

// TestVLANInStatus: `kvmnet get ports` shows each port's VLANs as the
// kernel has them.
func TestVLANInStatus(t *testing.T) {
	k := fakeHost()
	e := fakeEngine(t, k)
	doc := vlanStates[1].doc
	cfg, err := model.Parse("host.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := e.Apply(ctx, cfg, []byte(doc), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := e.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"web1-0": "30", "db1-0": "10", "app1-0": "10,20-22 native 100", "t1-0": "1"}
	for _, p := range st.VMs {
		if p.VLAN != want[p.Tap] {
			t.Errorf("port %s: VLAN %q, want %q", p.Tap, p.VLAN, want[p.Tap])
		}
	}
}

// TestAttachPortVLANs: a tap libvirt makes after the apply, on a
// VLAN-aware bridge, is adopted with its VLAN in the same step: it never
// sits on the untagged LAN (the default PVID 1) until the next converge,
// and the converge then finds nothing to do.
func TestAttachPortVLANs(t *testing.T) {
	k := fakeHost()
	if err := k.DeleteLink("db1-0"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cfg, err := model.Parse("vlan.yaml", []byte(vlanHost))
	if err != nil {
		t.Fatal(err)
	}
	e := fakeEngine(t, k)
	if _, err := e.Apply(ctx, cfg, []byte(vlanHost), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := k.AddTap("db1-0", plan.TapSpec{}, ""); err != nil {
		t.Fatal(err)
	}
	if done, err := e.AttachPort(ctx, "db1-0"); err != nil || !done {
		t.Fatalf("AttachPort: %v, %v", done, err)
	}
	l, _, _ := k.LinkState("db1-0")
	if l.Master != "br0" || plan.FormatVLANs(l.VLANs) != "10" {
		t.Errorf("db1-0 after AttachPort: master %q, VLANs %q; want br0 and 10 alone", l.Master, plan.FormatVLANs(l.VLANs))
	}
	if p, err := e.Converge(ctx); err != nil || !p.Empty() {
		t.Errorf("the converge after the adoption: %v\n%s", err, p)
	}
}
