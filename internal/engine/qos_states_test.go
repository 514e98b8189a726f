package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvmnet/kvmnet/internal/model"
)

const qosStatesHost = `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", tap: web1-0, qos: {ingress: 50mbit}}]
  - name: t1
    interfaces: [{network: dev, mac: "52:54:00:00:00:40", tap: t1-0, createTap: true, qos: {ingress: {rate: 100mbit, ceil: 1gbit}}}]
`

// qosStates: ports shaped (one adopted, one created), a rate changed,
// shaping removed from one and the other port gone.
var qosStates = []struct{ name, doc string }{
	{"shaped", qosStatesHost},
	{"changed", strings.Replace(qosStatesHost, "ingress: 50mbit", "ingress: {rate: 20mbit, burst: 64kb}", 1)},
	{"removed", strings.NewReplacer(", qos: {ingress: 50mbit}", "",
		"  - name: t1\n    interfaces: [{network: dev, mac: \"52:54:00:00:00:40\", tap: t1-0, createTap: true, qos: {ingress: {rate: 100mbit, ceil: 1gbit}}}]\n", "").Replace(qosStatesHost)},
}

// TestQoSStates applies qosStates to the fake kernel against goldens;
// each applied twice changes nothing; destroy gives the host back.
func TestQoSStates(t *testing.T) { checkStates(t, fakeHost(), qosStates, "qos-") }

// TestQoSRollbackAtEveryStep fails each kernel call of each qos
// transition in turn: the fake is as before every time.
func TestQoSRollbackAtEveryStep(t *testing.T) { rollbackAtEveryStep(t, fakeHost(), qosStates) }

// TestQoSStatus: `kvmnet get ports` shows each port's shaping to the
// guest as the kernel has it.
func TestQoSStatus(t *testing.T) {
	ctx := context.Background()
	e := fakeEngine(t, fakeHost())
	cfg, err := model.Parse("host.yaml", []byte(qosStatesHost))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, cfg, []byte(qosStatesHost), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := e.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range st.VMs {
		got[p.Tap] = p.Ingress
	}
	want := map[string]string{"web1-0": "50mbit/50mbit", "t1-0": "100mbit/1gbit"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ingress by tap (-want +got):\n%s", diff)
	}
}
