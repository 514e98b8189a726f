// Package api is kvmnet's REST API over a unix socket: the server side the
// daemon mounts, and the client the CLI uses when a daemon runs. Only this
// package turns errors into HTTP status codes.
package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

// Error codes are stable; clients match on them, never on messages.
const (
	CodeInvalidConfig = "invalid-config"
	CodeApplyFailed   = "apply-failed"
	CodeBadRequest    = "bad-request"
	CodeNotFound      = "not-found"
	CodeRemoval       = "removal-refused"
	CodeInternal      = "internal"
)

// ErrorBody is the JSON of every error response.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error is an API error as the client sees it.
type Error struct {
	Status int
	ErrorBody
}

func (e *Error) Error() string { return e.Message }

// FileRequest carries a host.yaml as the user wrote it; the daemon parses
// it so that errors name the user's file, line and column.
type FileRequest struct {
	File string `json:"file"`
	Doc  []byte `json:"doc"`
	// Confirm, on apply, is how long the apply waits for confirmation
	// before it is rolled back (a Go duration, "30s"); "" for none.
	Confirm string `json:"confirm,omitempty"`
	// AllowRemoval, on apply, lets it remove networks or most of what
	// kvmnet manages (engine.ApplyOptions); without it such an apply is
	// refused with 409 and the code removal-refused.
	AllowRemoval bool `json:"allowRemoval,omitempty"`
}

// PlanResult is the answer to plan, apply and destroy.
type PlanResult struct {
	Empty   bool     `json:"empty"`
	Summary string   `json:"summary"`
	Plan    string   `json:"plan"`
	Waiting []string `json:"waiting,omitempty"`
	// Pending is set when the apply waits for confirmation.
	Pending *store.Pending `json:"pending,omitempty"`
}

// Result makes a PlanResult of a plan.
func Result(p *plan.Plan) *PlanResult {
	if p == nil {
		return &PlanResult{Empty: true, Summary: "no changes", Plan: "no changes\n"}
	}
	return &PlanResult{Empty: p.Empty(), Summary: p.Summary(), Plan: p.String(), Waiting: p.Waiting}
}

// Backend is what the API serves; the daemon implements it.
type Backend interface {
	Plan(ctx context.Context, cfg *model.Config) (*plan.Plan, error)
	Apply(ctx context.Context, cfg *model.Config, doc []byte, opt engine.ApplyOptions) (*plan.Plan, error)
	Destroy(ctx context.Context) (*plan.Plan, error)
	Status(ctx context.Context) (*engine.Status, error)
	DesiredDoc() (file string, doc []byte, err error)
	Revisions() ([]store.Revision, error)
	Revision(rev uint64) ([]byte, error)
	Events(since uint64) ([]store.Event, error)
	ApplyConfirm(ctx context.Context, cfg *model.Config, doc []byte, window time.Duration, opt engine.ApplyOptions) (*plan.Plan, *store.Pending, error)
	Pending() (*store.Pending, error)
	Confirm() (*store.Pending, error)
	Expire(ctx context.Context, id, reason string) (*plan.Plan, error)
	// StoreCheck reads the whole state database and its backups.
	StoreCheck() *store.Report
	// SaveBaseline, Baseline and Baselines keep `kvmnet baseline`
	// snapshots in the state database the daemon holds.
	SaveBaseline(name string, data []byte) error
	Baseline(name string) ([]byte, error)
	Baselines() ([]string, error)
}

// BaselineBody carries one baseline snapshot (package baseline's JSON).
type BaselineBody struct {
	Data json.RawMessage `json:"data"`
}

// maxBaseline bounds a baseline's request body: a host with ten thousand
// taps makes about 3 MB.
const maxBaseline = 32 << 20

// endpoint is one route of the API.
type endpoint struct {
	method, path string
	handle       func(b Backend, r *http.Request) (any, error)
}

// endpoints is the whole API.
var endpoints = []endpoint{
	{"POST", "/v1/plan", func(b Backend, r *http.Request) (any, error) {
		cfg, _, err := readFile(r)
		if err != nil {
			return nil, err
		}
		p, err := b.Plan(r.Context(), cfg)
		return Result(p), err
	}},
	{"POST", "/v1/apply", func(b Backend, r *http.Request) (any, error) {
		cfg, req, err := readFile(r)
		if err != nil {
			return nil, err
		}
		doc := req.Doc
		opt := engine.ApplyOptions{AllowRemoval: req.AllowRemoval}
		if req.Confirm != "" {
			window, err := time.ParseDuration(req.Confirm)
			if err != nil || window <= 0 {
				return nil, &Error{Status: http.StatusBadRequest, ErrorBody: ErrorBody{CodeBadRequest, fmt.Sprintf("confirm %q: want a positive duration such as 30s or 2m", req.Confirm)}}
			}
			p, pend, err := b.ApplyConfirm(r.Context(), cfg, doc, window, opt)
			if err != nil {
				return nil, err
			}
			res := Result(p)
			res.Pending = pend
			return res, nil
		}
		p, err := b.Apply(r.Context(), cfg, doc, opt)
		if err != nil {
			return nil, err
		}
		return Result(p), nil
	}},
	{"POST", "/v1/destroy", func(b Backend, r *http.Request) (any, error) {
		p, err := b.Destroy(r.Context())
		if err != nil {
			return nil, err
		}
		return Result(p), nil
	}},
	{"GET", "/v1/status", func(b Backend, r *http.Request) (any, error) {
		return b.Status(r.Context())
	}},
	{"GET", "/v1/desired", func(b Backend, r *http.Request) (any, error) {
		file, doc, err := b.DesiredDoc()
		return FileRequest{File: file, Doc: doc}, err
	}},
	{"GET", "/v1/revisions", func(b Backend, r *http.Request) (any, error) {
		return b.Revisions()
	}},
	{"GET", "/v1/revisions/{rev}", func(b Backend, r *http.Request) (any, error) {
		rev, err := strconv.ParseUint(r.PathValue("rev"), 10, 64)
		if err != nil {
			return nil, &Error{Status: http.StatusBadRequest, ErrorBody: ErrorBody{CodeBadRequest, "revision must be a number"}}
		}
		doc, err := b.Revision(rev)
		if store.IsNotFound(err) {
			return nil, &Error{Status: http.StatusNotFound, ErrorBody: ErrorBody{CodeNotFound, err.Error()}}
		}
		return FileRequest{File: fmt.Sprintf("revision %d", rev), Doc: doc}, err
	}},
	{"GET", "/v1/events", func(b Backend, r *http.Request) (any, error) {
		since, _ := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
		return b.Events(since)
	}},
	{"GET", "/v1/pending", func(b Backend, r *http.Request) (any, error) {
		return b.Pending()
	}},
	{"POST", "/v1/confirm", func(b Backend, r *http.Request) (any, error) {
		p, err := b.Confirm()
		if err != nil {
			return nil, &Error{Status: http.StatusNotFound, ErrorBody: ErrorBody{CodeNotFound, err.Error()}}
		}
		return p, nil
	}},
	{"POST", "/v1/pending/{id}/expire", func(b Backend, r *http.Request) (any, error) {
		p, err := b.Expire(r.Context(), r.PathValue("id"), r.URL.Query().Get("reason"))
		if err != nil {
			return nil, err
		}
		return Result(p), nil
	}},
	{"GET", "/v1/store/check", func(b Backend, r *http.Request) (any, error) {
		return b.StoreCheck(), nil
	}},
	{"GET", "/v1/baselines", func(b Backend, r *http.Request) (any, error) {
		return b.Baselines()
	}},
	{"GET", "/v1/baselines/{name}", func(b Backend, r *http.Request) (any, error) {
		data, err := b.Baseline(r.PathValue("name"))
		if store.IsNotFound(err) {
			return nil, &Error{Status: http.StatusNotFound, ErrorBody: ErrorBody{CodeNotFound, err.Error()}}
		}
		return BaselineBody{Data: data}, err
	}},
	{"PUT", "/v1/baselines/{name}", func(b Backend, r *http.Request) (any, error) {
		var body BaselineBody
		if err := json.NewDecoder(io.LimitReader(r.Body, maxBaseline)).Decode(&body); err != nil || len(body.Data) == 0 {
			return nil, &Error{Status: http.StatusBadRequest, ErrorBody: ErrorBody{CodeBadRequest, "want {\"data\": SNAPSHOT}"}}
		}
		return struct{}{}, b.SaveBaseline(r.PathValue("name"), body.Data)
	}},
	{"POST", "/v1/forwards", addForward},
	{"DELETE", "/v1/forwards", removeForward},
	{"POST", "/v1/vms/interfaces", attachInterface},
	{"DELETE", "/v1/vms/interfaces", detachInterface},
	{"GET", "/v1/ping", func(b Backend, r *http.Request) (any, error) {
		return map[string]int{"pid": os.Getpid()}, nil
	}},
}

// errInvalid marks configuration errors (HTTP 400).
type errInvalid struct{ error }

func (e errInvalid) Unwrap() error { return e.error }

func readFile(r *http.Request) (*model.Config, *FileRequest, error) {
	req, err := decodeFile(r.Body)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := model.Parse(req.File, req.Doc)
	if err != nil {
		return nil, nil, errInvalid{err}
	}
	return cfg, req, nil
}

// Handler serves the API for b.
func Handler(b Backend, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	for _, ep := range endpoints {
		ep := ep
		mux.HandleFunc(ep.method+" "+ep.path, func(w http.ResponseWriter, r *http.Request) {
			v, err := ep.handle(b, r)
			if err != nil {
				writeError(w, err)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(v)
		})
	}
	return mux
}

func writeError(w http.ResponseWriter, err error) {
	body := ErrorBody{Code: CodeApplyFailed, Message: err.Error()}
	status := http.StatusInternalServerError
	var ae *Error
	var inv errInvalid
	var me *model.Error
	switch {
	case errors.As(err, &ae):
		status, body = ae.Status, ae.ErrorBody
	case errors.As(err, new(*engine.RemovalError)):
		status, body.Code = http.StatusConflict, CodeRemoval
	case errors.As(err, &inv), errors.As(err, &me):
		status, body.Code = http.StatusBadRequest, CodeInvalidConfig
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

// Listen opens the unix socket at path, root-only (0600) — or readable and
// writable by group (0660) when group is set — replacing a stale socket
// left by a crashed daemon but refusing to steal a live one.
func Listen(path, group string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("listening on %s: another kvmnet daemon is serving this socket (stop it first)", path)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	mode := os.FileMode(0o600)
	if group != "" {
		gid, err := lookupGroup(group)
		if err != nil {
			l.Close()
			return nil, err
		}
		if err := os.Chown(path, 0, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("giving %s to group %q: %w", path, group, err)
		}
		mode = 0o660
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("restricting %s: %w", path, err)
	}
	return l, nil
}

func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("--socket-group %q: %w (create the group, or name an existing one)", name, err)
	}
	return strconv.Atoi(g.Gid)
}

// ListenTLS opens a TCP listener that speaks TLS 1.2+ and accepts only
// clients with a certificate signed by a CA of the PEM file clientCA.
func ListenTLS(addr, certFile, keyFile, clientCA string) (net.Listener, error) {
	if certFile == "" || keyFile == "" || clientCA == "" {
		return nil, fmt.Errorf("--api-addr %s needs --tls-cert, --tls-key and --tls-client-ca: the TCP API only speaks mutual TLS", addr)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the API's certificate %s and key %s: %w", certFile, keyFile, err)
	}
	pem, err := os.ReadFile(clientCA)
	if err != nil {
		return nil, fmt.Errorf("reading client CA %s: %w", clientCA, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client CA %s holds no PEM certificate", clientCA)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	return tls.NewListener(ln, &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}), nil
}

// maxBody bounds a request: a file of model.MaxFileSize travels base64
// encoded inside JSON, a third larger.
const maxBody = model.MaxFileSize/3*4 + 64<<10

// decodeFile reads the FileRequest of a plan or apply. The body must be
// one JSON object with known keys: "null", "{}" with no document, a list
// or a typo in a key are errors (400), never an empty desired state.
func decodeFile(body io.Reader) (*FileRequest, error) {
	bad := func(format string, args ...any) error {
		return &Error{Status: http.StatusBadRequest, ErrorBody: ErrorBody{CodeBadRequest, fmt.Sprintf(format, args...)}}
	}
	lr := &io.LimitedReader{R: body, N: maxBody + 1}
	dec := json.NewDecoder(lr)
	dec.DisallowUnknownFields()
	// A pointer, so that "null" decodes to nil instead of an empty
	// request.
	var req *FileRequest
	err := dec.Decode(&req)
	if lr.N <= 0 {
		return nil, bad("request larger than %d bytes (a file may have %d MiB)", maxBody, model.MaxFileSize>>20)
	}
	if err != nil {
		return nil, bad("decoding request: %v (want a JSON object with file and doc; allowed keys: file, doc, confirm, allowRemoval)", err)
	}
	if req == nil {
		return nil, bad("decoding request: want a JSON object with file and doc, got null")
	}
	if dec.More() {
		return nil, bad("decoding request: more than one JSON value in the body")
	}
	if len(req.Doc) == 0 {
		return nil, bad("the request has no doc: send the host file's content (base64 in JSON) as doc; to remove everything, POST /v1/destroy")
	}
	return req, nil
}
