package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// InterfaceRequest attaches one VM interface to the desired state (POST
// /v1/vms/interfaces) or detaches one, or all of a VM's (DELETE
// /v1/vms/interfaces: VM and, optionally, Tap). The daemon checks it
// against the desired state it holds parsed, as it does a forward.
type InterfaceRequest struct {
	VM        string `json:"vm"`
	Network   string `json:"network,omitempty"`
	MAC       string `json:"mac,omitempty"`
	IP        string `json:"ip,omitempty"`
	Tap       string `json:"tap,omitempty"`
	CreateTap bool   `json:"createTap,omitempty"`
	Queues    int    `json:"queues,omitempty"`
	Owner     string `json:"owner,omitempty"`

	EditNames
}

// Attach is the interface the request attaches.
func (r *InterfaceRequest) Attach() model.Attach {
	return model.Attach{VM: r.VM, Network: r.Network, MAC: r.MAC, IP: r.IP, Tap: r.Tap, CreateTap: r.CreateTap, Queues: r.Queues, Owner: r.Owner}
}

// InterfaceBackend is what the VM interface routes need; the daemon
// implements it. A backend without it answers them with 404.
type InterfaceBackend interface {
	AttachInterface(ctx context.Context, a model.Attach, ed model.Edit) (*plan.Plan, error)
	DetachInterface(ctx context.Context, vm, tap string, ed model.Edit) (*plan.Plan, error)
}

// attachInterface serves POST /v1/vms/interfaces.
func attachInterface(b Backend, r *http.Request) (any, error) {
	ib, req, err := interfaceRequest(b, r)
	if err != nil {
		return nil, err
	}
	p, err := ib.AttachInterface(r.Context(), req.Attach(), req.ModelEdit("POST /v1/vms/interfaces"))
	if err != nil {
		return nil, err
	}
	return Result(p), nil
}

// detachInterface serves DELETE /v1/vms/interfaces.
func detachInterface(b Backend, r *http.Request) (any, error) {
	ib, req, err := interfaceRequest(b, r)
	if err != nil {
		return nil, err
	}
	p, err := ib.DetachInterface(r.Context(), req.VM, req.Tap, req.ModelEdit("DELETE /v1/vms/interfaces"))
	if err != nil {
		return nil, err
	}
	return Result(p), nil
}

func interfaceRequest(b Backend, r *http.Request) (InterfaceBackend, *InterfaceRequest, error) {
	ib, ok := b.(InterfaceBackend)
	if !ok {
		return nil, nil, &Error{Status: http.StatusNotFound, ErrorBody: ErrorBody{CodeNotFound, "this daemon cannot attach or detach VM interfaces; apply the edited file instead"}}
	}
	var req InterfaceRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, nil, &Error{Status: http.StatusBadRequest, ErrorBody: ErrorBody{CodeBadRequest, "decoding request: " + err.Error()}}
	}
	if req.VM == "" {
		return nil, nil, &Error{Status: http.StatusBadRequest, ErrorBody: ErrorBody{CodeBadRequest, `the request names no VM ("vm")`}}
	}
	return ib, &req, nil
}

// AttachInterface asks the daemon to attach a VM interface to the
// desired state and apply it.
func (c *Client) AttachInterface(ctx context.Context, req InterfaceRequest) (*PlanResult, error) {
	var r PlanResult
	return &r, noRoute(c.do(ctx, "POST", "/v1/vms/interfaces", req, &r))
}

// DetachInterface asks the daemon to detach a VM interface (or all of a
// VM's) from the desired state and apply that.
func (c *Client) DetachInterface(ctx context.Context, req InterfaceRequest) (*PlanResult, error) {
	var r PlanResult
	return &r, noRoute(c.do(ctx, "DELETE", "/v1/vms/interfaces", req, &r))
}
