package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// interfaces is a backend that records the attaches and detaches it is
// asked for.
type interfaces struct {
	Backend
	a       model.Attach
	vm, tap string
	ed      model.Edit
}

func (b *interfaces) AttachInterface(_ context.Context, a model.Attach, ed model.Edit) (*plan.Plan, error) {
	b.a, b.ed = a, ed
	return &plan.Plan{Actions: []plan.Action{plan.AddTap{Name: a.Tap}}}, nil
}

func (b *interfaces) DetachInterface(_ context.Context, vm, tap string, ed model.Edit) (*plan.Plan, error) {
	b.vm, b.tap, b.ed = vm, tap, ed
	return &plan.Plan{}, nil
}

func TestInterfaceRoutes(t *testing.T) {
	b := &interfaces{}
	c := serve(t, Handler(b, slog.New(slog.DiscardHandler)))
	ctx := context.Background()
	req := InterfaceRequest{VM: "web2", Network: "dev", MAC: "52:54:00:00:00:12", IP: "192.168.100.12", Tap: "vnet7", CreateTap: true, Queues: 4, Owner: "qemu",
		EditNames: EditNames{Edit: "kvmnet vm attach", Args: map[string]string{"mac": "--mac"}}}
	r, err := c.AttachInterface(ctx, req)
	if err != nil || r.Summary != "1 add-tap" {
		t.Fatalf("attach: %v, %+v", err, r)
	}
	if d := cmp.Diff(req.Attach(), b.a); d != "" {
		t.Errorf("attach (-sent +received):\n%s", d)
	}
	if d := cmp.Diff(model.Edit{Name: "kvmnet vm attach", Args: map[string]string{"mac": "--mac"}}, b.ed); d != "" {
		t.Errorf("edit (-sent +received):\n%s", d)
	}
	if _, err := c.DetachInterface(ctx, InterfaceRequest{VM: "web2", Tap: "vnet7"}); err != nil || b.vm != "web2" || b.tap != "vnet7" || b.ed.Name != "DELETE /v1/vms/interfaces" {
		t.Errorf("detach: %v, vm %q tap %q edit %q", err, b.vm, b.tap, b.ed.Name)
	}
	// A request without a VM, or with a field the API does not know, is
	// refused before the backend sees it.
	b.vm = ""
	var ae *Error
	if _, err := c.DetachInterface(ctx, InterfaceRequest{Tap: "vnet7"}); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(ae.Message, "names no VM") || b.vm != "" {
		t.Errorf("detach without a VM: %v", err)
	}
	if err := c.do(ctx, "POST", "/v1/vms/interfaces", map[string]any{"vm": "web2", "macc": "x"}, nil); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(ae.Message, "macc") {
		t.Errorf("a misspelt field: %v", err)
	}
	// A backend that cannot edit interfaces says so.
	type plain struct{ Backend }
	c = serve(t, Handler(plain{}, slog.New(slog.DiscardHandler)))
	if _, err := c.AttachInterface(ctx, req); !errors.As(err, &ae) || ae.Code != CodeNotFound {
		t.Errorf("backend without interface edits: %v", err)
	}
}
