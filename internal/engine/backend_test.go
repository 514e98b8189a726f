package engine

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kvmnet/kvmnet/internal/backend"
	"github.com/kvmnet/kvmnet/internal/backend/backendtest"
	"github.com/kvmnet/kvmnet/internal/model"
)

// mixed has a network on the Linux datapath and one on the test backend;
// web1 sits on both.
const mixed = `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
  - {name: far, mode: nat, subnet: 10.20.0.0/24, backend: test}
vms:
  - name: web1
    interfaces:
      - {network: dev, mac: "52:54:00:00:00:10", tap: web1-0}
      - {network: far, mac: "52:54:00:00:00:11"}
  - name: db1
    interfaces: [{network: far, mac: "52:54:00:00:00:12"}]
`

// TestSecondBackend runs a mixed file through the engine: each backend
// gets its part, plans print both, get networks lists both, a failing
// backend takes the Linux datapath back, an unknown backend is a
// positioned error, and destroy empties both.
func TestSecondBackend(t *testing.T) {
	k := fakeHost()
	rec := backendtest.New()
	e := fakeEngine(t, k)
	e.Backends = map[string]backend.Backend{"test": rec}
	ctx := context.Background()
	cfg, err := model.Parse("mixed.yaml", []byte(mixed))
	if err != nil {
		t.Fatal(err)
	}
	initial := k.Dump()

	// A failing backend: the Linux part was applied, then reverted.
	rec.Fail = true
	if _, err := e.Apply(ctx, cfg, []byte(mixed), ApplyOptions{}); !errors.Is(err, backendtest.ErrFail) || !strings.Contains(err.Error(), "everything applied before it was reverted") {
		t.Fatalf("apply with a failing backend: %v", err)
	}
	if got := k.Dump(); got != initial {
		t.Fatalf("a failing backend left the Linux datapath changed:\n%s", got)
	}
	if _, rev, _ := e.Store.Desired(); rev != 0 {
		t.Fatalf("a failed apply stored revision %d", rev)
	}
	rec.Fail = false

	p, err := e.Plan(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := p.String()
	if !strings.Contains(out, "ip link add kv-dev type bridge") || !strings.Contains(out, "# backend test\ntest-backend add network far ports [web1/52:54:00:00:00:11 db1/52:54:00:00:00:12]\n") ||
		strings.Contains(out, "kv-far") {
		t.Errorf("plan of the mixed file:\n%s", out)
	}
	if !strings.Contains(p.Summary(), "; test: 1 network changes") {
		t.Errorf("summary: %s", p.Summary())
	}
	if _, err := e.Apply(ctx, cfg, []byte(mixed), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := rec.Dump(); got != "far [web1/52:54:00:00:00:11 db1/52:54:00:00:00:12]\n" {
		t.Errorf("test backend after apply:\n%s", got)
	}
	if d := k.Dump(); !strings.Contains(d, "link kv-dev") || strings.Contains(d, "kv-far") {
		t.Errorf("the Linux datapath after apply:\n%s", d)
	}
	if p, err := e.Plan(ctx, cfg); err != nil || !p.Empty() {
		t.Errorf("applied twice, the second plan is not empty (%v):\n%s", err, p)
	}
	st, err := e.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, n := range st.Networks {
		rows = append(rows, n.Name+" "+n.Backend+" "+n.State)
	}
	if got := strings.Join(rows, ", "); got != "dev linux up, far test up" {
		t.Errorf("networks: %s", got)
	}

	// A backend this engine does not have.
	bad := strings.Replace(mixed, "backend: test", "backend: ovn", 1)
	if _, err := model.Parse("bad.yaml", []byte(bad)); err != nil {
		t.Fatal(err)
	}
	badCfg, _ := model.Parse("bad.yaml", []byte(bad))
	if _, err := e.Plan(ctx, badCfg); err == nil || err.Error() != `bad.yaml:4:59: networks[1].backend: "ovn" is not a backend of this kvmnet (it has: linux, test)` {
		t.Errorf("unknown backend: %v", err)
	}

	if _, err := e.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rec.Dump(); got != "" {
		t.Errorf("test backend after destroy:\n%s", got)
	}
	if got := k.Dump(); got != initial {
		t.Errorf("destroy did not give the host back:\n%s", got)
	}
}

// TestPartPositions checks that a message about a backend's part of a
// file names the place in the whole file.
func TestPartPositions(t *testing.T) {
	cfg, err := model.Parse("mixed.yaml", []byte(mixed))
	if err != nil {
		t.Fatal(err)
	}
	far := cfg.ForBackend("test")
	if len(far.Networks) != 1 || len(far.VMs) != 2 || len(far.VMs[0].Interfaces) != 1 || far.VMs[0].Interfaces[0].Network != "far" {
		t.Fatalf("the test backend's part: %+v", far)
	}
	// Each path of the part must name what the whole file's path names.
	for part, whole := range map[string]string{
		"networks[0].subnet":       "networks[1].subnet",
		"vms[0].interfaces[0].mac": "vms[0].interfaces[1].mac",
		"vms[1].interfaces[0].mac": "vms[1].interfaces[0].mac",
		"vms[1]":                   "vms[1]",
	} {
		got, want := far.Errorf(part, "x").Error(), cfg.Errorf(whole, "x").Error()
		if got != want || !strings.HasPrefix(got, "mixed.yaml:") {
			t.Errorf("%s: %s, want %s", part, got, want)
		}
	}
	if got, want := cfg.ForBackend(model.BackendLinux).Errorf("vms[0].interfaces[0].tap", "x").Error(), cfg.Errorf("vms[0].interfaces[0].tap", "x").Error(); got != want {
		t.Errorf("linux part: %s, want %s", got, want)
	}
}
