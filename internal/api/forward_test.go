package api

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// forwards is a backend that records the forward edits it is asked for.
type forwards struct {
	Backend // the other routes are not called
	network string
	f       model.Forward
	port    string
	proto   string
	ed      model.Edit
	err     error
}

func (b *forwards) AddForward(_ context.Context, network string, f model.Forward, ed model.Edit) (*plan.Plan, error) {
	b.network, b.f, b.ed = network, f, ed
	return &plan.Plan{Actions: []plan.Action{plan.SetSysctl{Key: "net.ipv4.ip_forward", Value: "1"}}}, b.err
}

func (b *forwards) RemoveForward(_ context.Context, network, port, proto string, ed model.Edit) (*plan.Plan, error) {
	b.network, b.port, b.proto, b.ed = network, port, proto, ed
	return &plan.Plan{}, b.err
}

// serve serves h on a unix socket for the test and returns a client.
func serve(t *testing.T, h http.Handler) *Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return NewClient(path)
}

func TestForwardRoutes(t *testing.T) {
	b := &forwards{}
	c := serve(t, Handler(b, slog.New(slog.DiscardHandler)))
	ctx := context.Background()
	args := map[string]string{"port": "--port"}

	r, err := c.AddForward(ctx, ForwardRequest{Network: "dev", Proto: "udp", Port: "5000-5010", To: "web1", From: []string{"203.0.113.0/24"},
		Listen: "203.0.113.10", RateLimit: "50/second", Force: true, EditNames: EditNames{Edit: "kvmnet forward add", Args: args}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Empty || r.Summary != "1 sysctl" {
		t.Errorf("result: %+v", r)
	}
	want := model.Forward{Proto: "udp", Port: "5000-5010", To: "web1", From: []string{"203.0.113.0/24"}, Listen: "203.0.113.10", RateLimit: "50/second", Force: true}
	if diff := cmp.Diff(want, b.f, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" || b.network != "dev" {
		t.Errorf("network %q, forward (-sent +received):\n%s", b.network, diff)
	}
	if diff := cmp.Diff(model.Edit{Name: "kvmnet forward add", Args: args}, b.ed); diff != "" {
		t.Errorf("edit (-sent +received):\n%s", diff)
	}

	if _, err := c.RemoveForward(ctx, ForwardRequest{Network: "dev", Port: "8080", Proto: "tcp"}); err != nil {
		t.Fatal(err)
	}
	if b.network != "dev" || b.port != "8080" || b.proto != "tcp" || b.ed.Name != "DELETE /v1/forwards" {
		t.Errorf("removal received as %q %q %q, edit %q", b.network, b.port, b.proto, b.ed.Name)
	}

	// A refused edit is a 400 that says why.
	b.err = &model.Error{File: "kvmnet forward add", Path: "--port", Msg: `"0": port 0 is out of range (want 1 to 65535)`}
	_, err = c.AddForward(ctx, ForwardRequest{Network: "dev", Port: "0", To: "web1"})
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != CodeInvalidConfig || ae.Message != b.err.Error() {
		t.Errorf("refused edit: got %#v", err)
	}
}

// TestForwardRoutesMissing: a backend that cannot edit forwards says so,
// and a daemon without the routes (older than the client) is told apart.
func TestForwardRoutesMissing(t *testing.T) {
	ctx := context.Background()
	type plain struct{ Backend }
	c := serve(t, Handler(plain{}, slog.New(slog.DiscardHandler)))
	_, err := c.AddForward(ctx, ForwardRequest{Network: "dev", Port: "1", To: "web1"})
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != CodeNotFound {
		t.Errorf("backend without forward edits: got %#v", err)
	}

	old := http.NewServeMux()
	old.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"pid": 1}`)) })
	c = serve(t, old)
	if _, err := c.AddForward(ctx, ForwardRequest{Network: "dev", Port: "1", To: "web1"}); !errors.Is(err, ErrNoForwardRoute) {
		t.Errorf("adding through a daemon without the route: got %v, want ErrNoForwardRoute", err)
	}
	if _, err := c.RemoveForward(ctx, ForwardRequest{Network: "dev", Port: "1"}); !errors.Is(err, ErrNoForwardRoute) {
		t.Errorf("removing through a daemon without the route: got %v, want ErrNoForwardRoute", err)
	}
}
