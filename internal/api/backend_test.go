package api_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/api"
	"github.com/kvmnet/kvmnet/internal/backend"
	"github.com/kvmnet/kvmnet/internal/backend/backendtest"
	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/kernel/fake"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

// served is an engine behind the API, as the daemon serves one.
type served struct{ *engine.Engine }

func (s served) Revisions() ([]store.Revision, error)        { return s.Store.Revisions() }
func (s served) Revision(rev uint64) ([]byte, error)         { return s.Store.Revision(rev) }
func (s served) Events(since uint64) ([]store.Event, error)  { return s.Store.Events(since) }
func (s served) StoreCheck() *store.Report                   { return store.Inspect(s.Store.Path(), s.Store) }
func (s served) SaveBaseline(name string, data []byte) error { return s.Store.SaveBaseline(name, data) }
func (s served) Baseline(name string) ([]byte, error)        { return s.Store.Baseline(name) }
func (s served) Baselines() ([]string, error)                { return s.Store.Baselines() }
func (s served) ApplyConfirm(ctx context.Context, cfg *model.Config, doc []byte, w time.Duration, opt engine.ApplyOptions) (*plan.Plan, *store.Pending, error) {
	return s.Engine.ApplyConfirm(ctx, cfg, doc, w, 0, opt)
}

// TestSecondBackendThroughAPI plans, applies and lists a file with a
// network on the test backend through the API's client and server.
func TestSecondBackendThroughAPI(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, store.File))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	k := fake.New(&plan.Observed{
		Links:   map[string]plan.Link{"eth0": {Name: "eth0", Kind: "veth", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("172.30.0.2/24")}}},
		Sysctls: map[string]string{plan.SysctlIPForward: "0"},
	})
	rec := backendtest.New()
	e := &engine.Engine{Store: st, Kernel: k, Log: slog.New(slog.DiscardHandler), Journal: filepath.Join(dir, "journal"),
		Backends: map[string]backend.Backend{"test": rec}}
	sock := filepath.Join(dir, "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api.Handler(served{e}, slog.New(slog.DiscardHandler))}
	go srv.Serve(l)
	defer srv.Close()
	c := api.NewClient(sock)
	ctx := context.Background()

	doc := []byte("networks:\n  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}\n  - {name: far, mode: nat, subnet: 10.20.0.0/24, backend: test}\n" +
		"vms:\n  - name: web1\n    interfaces: [{network: far, mac: \"52:54:00:00:00:11\"}]\n")
	r, err := c.Plan(ctx, "mixed.yaml", doc)
	if err != nil || !strings.Contains(r.Plan, "# backend test\ntest-backend add network far ports [web1/52:54:00:00:00:11]") || !strings.Contains(r.Plan, "ip link add kv-dev") {
		t.Fatalf("plan: %v\n%+v", err, r)
	}
	if r, err = c.Apply(ctx, "mixed.yaml", doc, engine.ApplyOptions{}); err != nil || r.Empty {
		t.Fatalf("apply: %v %+v", err, r)
	}
	if rec.Dump() != "far [web1/52:54:00:00:00:11]\n" {
		t.Errorf("test backend: %q", rec.Dump())
	}
	status, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, n := range status.Networks {
		rows = append(rows, n.Name+"/"+n.Backend+"/"+n.State)
	}
	if got := strings.Join(rows, " "); got != "dev/linux/up far/test/up" {
		t.Errorf("networks through the API: %s", got)
	}
	bad := []byte(strings.Replace(string(doc), "backend: test", "backend: nope", 1))
	if _, err := c.Plan(ctx, "bad.yaml", bad); err == nil || !strings.Contains(err.Error(), `bad.yaml:3:59: networks[1].backend: "nope" is not a backend of this kvmnet (it has: linux, test)`) {
		t.Errorf("plan with an unknown backend: %v", err)
	}
}
