package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

// applies is a backend that records plans and applies; it fails an apply
// that removes without consent, as the engine does.
type applies struct {
	Backend
	calls   int
	cfg     *model.Config
	opt     engine.ApplyOptions
	removes bool
}

func (b *applies) Plan(_ context.Context, cfg *model.Config) (*plan.Plan, error) {
	b.calls++
	b.cfg = cfg
	return &plan.Plan{}, nil
}

func (b *applies) Apply(_ context.Context, cfg *model.Config, _ []byte, opt engine.ApplyOptions) (*plan.Plan, error) {
	b.calls++
	b.cfg, b.opt = cfg, opt
	if b.removes && !opt.AllowRemoval {
		return nil, &engine.RemovalError{Source: cfg.Source, Removal: &plan.Removal{Networks: []string{"dev (bridge kv-dev, 2 ports)"}, Links: 3, Managed: 3}}
	}
	return &plan.Plan{}, nil
}

func (b *applies) ApplyConfirm(ctx context.Context, cfg *model.Config, doc []byte, _ time.Duration, opt engine.ApplyOptions) (*plan.Plan, *store.Pending, error) {
	p, err := b.Apply(ctx, cfg, doc, opt)
	return p, nil, err
}

const goodDoc = "networks:\n  - {name: dev, mode: nat, subnet: 192.168.100.0/24}\n"

func post(t *testing.T, h http.Handler, path, body string) (int, ErrorBody) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", path, strings.NewReader(body)))
	var eb ErrorBody
	if rec.Code != http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil {
			t.Fatalf("POST %s %.40q: status %d, body %q is not an error body", path, body, rec.Code, rec.Body)
		}
	}
	return rec.Code, eb
}

// TestBodiesThatSayNothing checks that a plan or apply whose body carries
// no file is a 400 and reaches no backend: `null` once applied as an empty
// desired state and deleted every bridge.
func TestBodiesThatSayNothing(t *testing.T) {
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tt := range []struct{ body, code, msg string }{
		{"null", CodeBadRequest, "want a JSON object"},
		{"{}", CodeBadRequest, "the request has no doc"},
		{`{"file": "host.yaml"}`, CodeBadRequest, "the request has no doc"},
		{`{"file": "host.yaml", "doc": null}`, CodeBadRequest, "the request has no doc"},
		{`{"file": "host.yaml", "doc": ""}`, CodeBadRequest, "the request has no doc"},
		{"[]", CodeBadRequest, "want a JSON object"},
		{`"networks: []"`, CodeBadRequest, "want a JSON object"},
		{"", CodeBadRequest, "decoding request: EOF"},
		{`{"file": "h.yaml", "doc": 5}`, CodeBadRequest, "cannot unmarshal number"},
		{`{"file": "h.yaml", "doc": "` + enc(goodDoc) + `", "alowRemoval": true}`, CodeBadRequest, `unknown field "alowRemoval"`},
		{`{"file": "h.yaml", "doc": "` + enc(goodDoc) + `"} {}`, CodeBadRequest, "more than one JSON value"},
		{`{"file": "h.yaml", "doc": "` + enc("# nothing\n") + `"}`, CodeInvalidConfig, "h.yaml:1:1: the file describes no networks"},
		{`{"file": "h.yaml", "doc": "` + enc("---\n") + `"}`, CodeInvalidConfig, "the file describes no networks"},
	} {
		for _, path := range []string{"/v1/plan", "/v1/apply"} {
			b := &applies{}
			status, eb := post(t, Handler(b, slog.New(slog.DiscardHandler)), path, tt.body)
			if status != http.StatusBadRequest || eb.Code != tt.code || !strings.Contains(eb.Message, tt.msg) {
				t.Errorf("POST %s %.60q: %d %+v, want 400 %s containing %q", path, tt.body, status, eb, tt.code, tt.msg)
			}
			if b.calls != 0 {
				t.Errorf("POST %s %.60q reached the backend", path, tt.body)
			}
		}
	}
}

// TestTooLargeBody checks that a body over the limit is refused before it
// is parsed.
func TestTooLargeBody(t *testing.T) {
	big := `{"file": "h.yaml", "doc": "` + strings.Repeat("A", maxBody) + `"}`
	status, eb := post(t, Handler(&applies{}, slog.New(slog.DiscardHandler)), "/v1/apply", big)
	if status != http.StatusBadRequest || !strings.Contains(eb.Message, "request larger than") {
		t.Errorf("a %d byte body: %d %+v", len(big), status, eb)
	}
}

// TestAllowRemoval checks that the consent travels from the client to the
// backend, and that a refusal comes back as 409 with its message.
func TestAllowRemoval(t *testing.T) {
	b := &applies{removes: true}
	c := serve(t, Handler(b, slog.New(slog.DiscardHandler)))
	ctx := context.Background()
	_, err := c.Apply(ctx, "host.yaml", []byte(goodDoc), engine.ApplyOptions{})
	var ae *Error
	if !asError(err, &ae) || ae.Status != http.StatusConflict || ae.Code != CodeRemoval ||
		!strings.Contains(ae.Message, "refusing to apply host.yaml: it removes network dev (bridge kv-dev, 2 ports)") {
		t.Fatalf("apply that removes: %v", err)
	}
	if _, err := c.Apply(ctx, "host.yaml", []byte(goodDoc), engine.ApplyOptions{AllowRemoval: true}); err != nil || !b.opt.AllowRemoval {
		t.Errorf("apply with consent: %v (backend saw %+v)", err, b.opt)
	}
	if _, err := c.ApplyConfirm(ctx, "host.yaml", []byte(goodDoc), time.Minute, engine.ApplyOptions{}); !asError(err, &ae) || ae.Code != CodeRemoval {
		t.Errorf("apply --confirm that removes: %v", err)
	}
}

func asError(err error, target **Error) bool {
	e, ok := err.(*Error)
	if ok {
		*target = e
	}
	return ok
}

// FuzzDecodeFile feeds the plan/apply decoder arbitrary bodies: it must
// never panic, must answer every body it refuses with a 400, and must not
// let a request without a document through.
func FuzzDecodeFile(f *testing.F) {
	f.Add([]byte("null"))
	f.Add([]byte("{}"))
	f.Add([]byte(`{"file": "h.yaml", "doc": "bmV0d29ya3M6IFtdCg==", "confirm": "30s", "allowRemoval": true}`))
	f.Add([]byte(`{"file": "h.yaml", "doc": "` + base64.StdEncoding.EncodeToString([]byte(goodDoc)) + `"}`))
	f.Add([]byte(`[{"doc": 1}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeFile(bytes.NewReader(body))
		if err != nil {
			var ae *Error
			if !asError(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != CodeBadRequest {
				t.Fatalf("decodeFile(%q) = %v, want a 400 bad-request", body, err)
			}
			return
		}
		if len(req.Doc) == 0 {
			t.Fatalf("decodeFile(%q) let a request without doc through", body)
		}
		// Through the handler, a body that decodes reaches the backend
		// only when its document parses to at least one network.
		b := &applies{}
		rec := httptest.NewRecorder()
		Handler(b, slog.New(slog.DiscardHandler)).ServeHTTP(rec, httptest.NewRequest("POST", "/v1/plan", io.NopCloser(bytes.NewReader(body))))
		if b.calls > 0 && len(b.cfg.Networks) == 0 {
			t.Fatalf("body %q reached the backend with no networks", body)
		}
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("body %q: status %d", body, rec.Code)
		}
	})
}
