package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/store"
)

// Client talks to a daemon over its unix socket.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{Socket: path, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

// Alive reports whether a daemon answers on the socket. A socket file with
// nobody behind it (a crashed daemon) is not alive.
func (c *Client) Alive(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var out map[string]int
	return c.do(ctx, "GET", "/v1/ping", nil, &out) == nil
}

// Ping checks that a daemon answers and returns why not.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var out map[string]int
	return c.do(ctx, "GET", "/v1/ping", nil, &out)
}

// IsUnreachable reports whether err means no daemon listens.
func IsUnreachable(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body bytes.Buffer
	if in != nil {
		if err := json.NewEncoder(&body).Encode(in); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://kvmnet"+path, &body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("talking to the daemon on %s: %w", c.Socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e := &Error{Status: resp.StatusCode}
		if err := json.NewDecoder(resp.Body).Decode(&e.ErrorBody); err != nil {
			// Not an API error: a route this daemon does not have, say.
			return &Error{Status: resp.StatusCode, ErrorBody: ErrorBody{Message: "daemon answered " + resp.Status}}
		}
		return e
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Plan asks the daemon for the plan of a file.
func (c *Client) Plan(ctx context.Context, file string, doc []byte) (*PlanResult, error) {
	var r PlanResult
	return &r, c.do(ctx, "POST", "/v1/plan", FileRequest{File: file, Doc: doc}, &r)
}

// Apply sends a file to the daemon, which applies it and serves it.
func (c *Client) Apply(ctx context.Context, file string, doc []byte, opt engine.ApplyOptions) (*PlanResult, error) {
	var r PlanResult
	return &r, c.do(ctx, "POST", "/v1/apply", FileRequest{File: file, Doc: doc, AllowRemoval: opt.AllowRemoval}, &r)
}

// ApplyConfirm applies a file that is rolled back unless confirmed within
// window.
func (c *Client) ApplyConfirm(ctx context.Context, file string, doc []byte, window time.Duration, opt engine.ApplyOptions) (*PlanResult, error) {
	var r PlanResult
	return &r, c.do(ctx, "POST", "/v1/apply", FileRequest{File: file, Doc: doc, Confirm: window.String(), AllowRemoval: opt.AllowRemoval}, &r)
}

// StoreCheck asks the daemon to check the state database it holds.
func (c *Client) StoreCheck(ctx context.Context) (*store.Report, error) {
	var r store.Report
	return &r, c.do(ctx, "GET", "/v1/store/check", nil, &r)
}

// Pending returns the apply waiting for confirmation, or nil.
func (c *Client) Pending(ctx context.Context) (*store.Pending, error) {
	var p *store.Pending
	return p, c.do(ctx, "GET", "/v1/pending", nil, &p)
}

// Confirm keeps the pending apply.
func (c *Client) Confirm(ctx context.Context) (*store.Pending, error) {
	var p store.Pending
	return &p, c.do(ctx, "POST", "/v1/confirm", nil, &p)
}

// Expire rolls back pending apply id, if it still waits.
func (c *Client) Expire(ctx context.Context, id, reason string) (*PlanResult, error) {
	var r PlanResult
	return &r, c.do(ctx, "POST", "/v1/pending/"+url.PathEscape(id)+"/expire?reason="+url.QueryEscape(reason), nil, &r)
}

// Destroy asks the daemon to remove everything kvmnet owns.
func (c *Client) Destroy(ctx context.Context) (*PlanResult, error) {
	var r PlanResult
	return &r, c.do(ctx, "POST", "/v1/destroy", nil, &r)
}

// Status fetches what `kvmnet get` shows.
func (c *Client) Status(ctx context.Context) (*engine.Status, error) {
	var s engine.Status
	return &s, c.do(ctx, "GET", "/v1/status", nil, &s)
}

// Desired fetches the stored desired state as the user wrote it.
func (c *Client) Desired(ctx context.Context) (string, []byte, error) {
	var r FileRequest
	err := c.do(ctx, "GET", "/v1/desired", nil, &r)
	return r.File, r.Doc, err
}

// Revisions lists the stored revisions of the desired state.
func (c *Client) Revisions(ctx context.Context) ([]store.Revision, error) {
	var r []store.Revision
	return r, c.do(ctx, "GET", "/v1/revisions", nil, &r)
}

// Revision fetches one stored revision.
func (c *Client) Revision(ctx context.Context, rev uint64) ([]byte, error) {
	var r FileRequest
	err := c.do(ctx, "GET", fmt.Sprintf("/v1/revisions/%d", rev), nil, &r)
	return r.Doc, err
}

// Events fetches the events after since.
func (c *Client) Events(ctx context.Context, since uint64) ([]store.Event, error) {
	var r []store.Event
	return r, c.do(ctx, "GET", fmt.Sprintf("/v1/events?since=%d", since), nil, &r)
}

// SaveBaseline stores a baseline snapshot under name.
func (c *Client) SaveBaseline(ctx context.Context, name string, data []byte) error {
	return c.do(ctx, "PUT", "/v1/baselines/"+url.PathEscape(name), BaselineBody{Data: data}, &struct{}{})
}

// Baseline fetches baseline name.
func (c *Client) Baseline(ctx context.Context, name string) ([]byte, error) {
	var r BaselineBody
	err := c.do(ctx, "GET", "/v1/baselines/"+url.PathEscape(name), nil, &r)
	return r.Data, err
}

// Baselines lists the saved baselines.
func (c *Client) Baselines(ctx context.Context) ([]string, error) {
	var r []string
	return r, c.do(ctx, "GET", "/v1/baselines", nil, &r)
}
