package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// ForwardRequest adds a port forward to the desired state (POST
// /v1/forwards) or removes one (DELETE /v1/forwards: Network, Proto and
// Port only). The daemon checks it against the desired state it holds
// parsed, without sending or parsing the whole file.
type ForwardRequest struct {
	Network   string   `json:"network"`
	Proto     string   `json:"proto,omitempty"`
	Port      string   `json:"port"`
	To        string   `json:"to,omitempty"`
	From      []string `json:"from,omitempty"`
	Listen    string   `json:"listen,omitempty"`
	RateLimit string   `json:"rateLimit,omitempty"`
	Force     bool     `json:"force,omitempty"`

	EditNames
}

// EditNames name an edit request and its fields in messages and in the
// history of the desired state: Edit, e.g. "kvmnet forward add", and Args,
// the argument behind each field, e.g. "port" → "--port" (see
// model.Edit). Both are optional: an API client without a command line
// gets the fields' names.
type EditNames struct {
	Edit string            `json:"edit,omitempty"`
	Args map[string]string `json:"args,omitempty"`
}

// Forward is the forward the request adds.
func (r *ForwardRequest) Forward() model.Forward {
	return model.Forward{Proto: r.Proto, Port: r.Port, To: r.To, From: r.From, Listen: r.Listen, RateLimit: r.RateLimit, Force: r.Force}
}

// ModelEdit is how messages name the request and its fields; def names
// a request without Edit.
func (r *EditNames) ModelEdit(def string) model.Edit {
	if r.Edit == "" {
		return model.Edit{Name: def, Args: r.Args}
	}
	return model.Edit{Name: r.Edit, Args: r.Args}
}

// ForwardBackend is what the forward routes need; the daemon implements
// it. A backend without it answers them with 404.
type ForwardBackend interface {
	AddForward(ctx context.Context, network string, f model.Forward, ed model.Edit) (*plan.Plan, error)
	RemoveForward(ctx context.Context, network, port, proto string, ed model.Edit) (*plan.Plan, error)
}

// addForward serves POST /v1/forwards.
func addForward(b Backend, r *http.Request) (any, error) {
	fb, req, err := forwardRequest(b, r)
	if err != nil {
		return nil, err
	}
	p, err := fb.AddForward(r.Context(), req.Network, req.Forward(), req.ModelEdit("POST /v1/forwards"))
	if err != nil {
		return nil, err
	}
	return Result(p), nil
}

// removeForward serves DELETE /v1/forwards.
func removeForward(b Backend, r *http.Request) (any, error) {
	fb, req, err := forwardRequest(b, r)
	if err != nil {
		return nil, err
	}
	p, err := fb.RemoveForward(r.Context(), req.Network, req.Port, req.Proto, req.ModelEdit("DELETE /v1/forwards"))
	if err != nil {
		return nil, err
	}
	return Result(p), nil
}

func forwardRequest(b Backend, r *http.Request) (ForwardBackend, *ForwardRequest, error) {
	fb, ok := b.(ForwardBackend)
	if !ok {
		return nil, nil, &Error{Status: http.StatusNotFound, ErrorBody: ErrorBody{CodeNotFound, "this daemon cannot edit forwards; apply the edited file instead"}}
	}
	var req ForwardRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		return nil, nil, &Error{Status: http.StatusBadRequest, ErrorBody: ErrorBody{CodeBadRequest, "decoding request: " + err.Error()}}
	}
	return fb, &req, nil
}

// ErrNoForwardRoute is returned by AddForward and RemoveForward when the
// daemon does not have the forward routes (one older than this client):
// edit the file it serves instead.
var ErrNoForwardRoute = errors.New("the daemon has no forward routes (it is older than this kvmnet; restart it)")

// AddForward asks the daemon to add a forward to the desired state and
// apply it.
func (c *Client) AddForward(ctx context.Context, req ForwardRequest) (*PlanResult, error) {
	var r PlanResult
	return &r, noRoute(c.do(ctx, "POST", "/v1/forwards", req, &r))
}

// RemoveForward asks the daemon to remove a forward from the desired state
// and apply that.
func (c *Client) RemoveForward(ctx context.Context, req ForwardRequest) (*PlanResult, error) {
	var r PlanResult
	return &r, noRoute(c.do(ctx, "DELETE", "/v1/forwards", req, &r))
}

// noRoute tells a route the daemon does not know (404 or 405 without an
// API error body) from an error the route answered.
func noRoute(err error) error {
	var ae *Error
	if errors.As(err, &ae) && ae.Code == "" && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed) {
		return ErrNoForwardRoute
	}
	return err
}
