// Package engine ties the flow together for one namespace: desired state
// from the store, a fresh observation of the kernel, a plan, an apply that
// rolls back on failure. The CLI uses it directly when no daemon runs; the
// daemon uses the same engine behind its API.
package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kvmnet/kvmnet/internal/apply"
	"github.com/kvmnet/kvmnet/internal/backend"
	"github.com/kvmnet/kvmnet/internal/kernel"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

// Kernel is the host kernel as the engine needs it: apply's contracts,
// and what plans, statuses and the --confirm probe read. kernel.Host is
// the real one, kernel/fake one in memory.
type Kernel interface {
	apply.Kernel
	Observe(ctx context.Context, opt plan.ObserveOptions) (*plan.Observed, error)
	// Listeners lists the host's listening sockets on the protocols and
	// ports keep accepts (see plan.Options.Listeners).
	Listeners(keep func(proto string, port uint16) bool) ([]plan.Listener, error)
	// LinkState reads one link; false when it does not exist.
	LinkState(name string) (plan.Link, bool, error)
	// DropCounters are port security's drops by port and reason.
	DropCounters() (map[string]map[string]uint64, error)
	// OffloadedFlows counts the connections the fast path carries, for
	// each of subnets.
	OffloadedFlows(subnets []netip.Prefix) (map[netip.Prefix]int, error)
	// DefaultGateway is the gateway of the IPv4 default route, invalid
	// when there is none.
	DefaultGateway() (netip.Addr, error)
}

var _ Kernel = (*kernel.Host)(nil)

// Engine serialises plans and applies for one namespace.
type Engine struct {
	Store  *store.Store
	Kernel Kernel
	Log    *slog.Logger
	// Journal is the path of the apply journal (see journal); "" disables it.
	Journal string
	// Prober checks connectivity after an apply --confirm; nil probes the
	// kernel's default gateway.
	Prober Prober
	// Backends are the backends besides this host's Linux datapath (which
	// is Kernel), by the name networks give in backend:. Each is planned
	// with its part of every file, an empty part too (so it removes what
	// it holds when the file drops its last network), and applied after
	// the Linux datapath.
	Backends map[string]backend.Backend

	// KeepInBackground keeps the parsed form of an edit's new revision in
	// the store after the edit returns, otherwise in the revision's own
	// transaction. A daemon serves edits from memory and keeps the form
	// only for a later CLI without a daemon; encoding 10,000 forwards
	// takes about 5 ms and doubles what the transaction writes.
	KeepInBackground bool

	mu sync.Mutex

	// later is the newest parsed form waiting to be kept in the
	// background; laterRunning that a goroutine keeps them; laterDone
	// waits for it.
	laterMu      sync.Mutex
	later        *model.Config
	laterRev     uint64
	laterRunning bool
	laterDone    sync.WaitGroup

	// cacheMu guards the parsed desired state of revision cachedRev.
	cacheMu   sync.Mutex
	cached    *model.Config
	cachedRev uint64
}

// DesiredDoc returns the stored desired state as the user wrote it, with
// the name it was applied from.
func (e *Engine) DesiredDoc() (file string, doc []byte, err error) {
	doc, rev, err := e.Store.Desired()
	if err != nil || rev == 0 {
		return "", nil, err
	}
	revs, err := e.Store.Revisions()
	if err != nil {
		return "", nil, err
	}
	for _, r := range revs {
		if r.Rev == rev {
			file = r.Note
		}
	}
	return file, doc, nil
}

// Desired returns the stored desired state; an empty Config when none.
// The parsed config is kept for its revision: the daemon reconciles on
// every event, and parsing a large file each time would be most of the
// work. Callers must not change it.
func (e *Engine) Desired() (*model.Config, uint64, error) {
	doc, rev, err := e.Store.Desired()
	if err != nil {
		return nil, 0, err
	}
	if rev == 0 {
		return &model.Config{Source: "(empty)"}, 0, nil
	}
	e.cacheMu.Lock()
	defer e.cacheMu.Unlock()
	if e.cached != nil && e.cachedRev == rev {
		return e.cached, rev, nil
	}
	name, _, err := e.DesiredDoc()
	if err != nil {
		return nil, 0, err
	}
	if name == "" {
		name = "desired state"
	}
	cfg, err := model.ParseStored(name, doc)
	if err != nil {
		return nil, 0, fmt.Errorf("reading stored desired state (revision %d): %w", rev, err)
	}
	e.cached, e.cachedRev = cfg, rev
	return cfg, rev, nil
}

// Plan observes the kernel and plans cfg against it.
func (e *Engine) Plan(ctx context.Context, cfg *model.Config) (*plan.Plan, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, _, err := e.planObserved(ctx, cfg, true)
	return p, err
}

func (e *Engine) plan(ctx context.Context, cfg *model.Config) (*plan.Plan, error) {
	p, _, err := e.planObserved(ctx, cfg, false)
	return p, err
}

// planObserved is plan, returning the observation the plan started from.
// fresh says cfg comes from the user now (a plan or an apply, not a
// reconcile of what is stored): it is then checked against every address
// and route of the host, which a reconcile does not read again.
func (e *Engine) planObserved(ctx context.Context, cfg *model.Config, fresh bool) (*plan.Plan, *plan.Observed, error) {
	orig, err := e.Store.Originals()
	if err != nil {
		return nil, nil, err
	}
	if err := e.checkBackends(cfg); err != nil {
		return nil, nil, err
	}
	whole := cfg
	cfg = e.linuxPart(cfg)
	hosts := plan.NeedsHosts(cfg, orig) || (fresh && len(cfg.Networks) > 0)
	ctSysctls, memory := plan.ConntrackObserve(cfg, orig)
	obs, err := e.Kernel.Observe(ctx, plan.ObserveOptions{Hosts: hosts, Features: plan.NeededFeatures(cfg), Sysctls: ctSysctls, Memory: memory})
	if err != nil {
		return nil, nil, err
	}
	claim, err := journal{e.Journal}.names()
	if err != nil {
		return nil, nil, err
	}
	leases, err := e.Store.Leases("")
	if err != nil {
		return nil, nil, err
	}
	active := map[string]netip.Addr{}
	now := time.Now()
	for _, l := range leases {
		if !l.Expired(now) {
			active[l.Network+"/"+l.MAC] = l.IP
		}
	}
	opt := plan.Options{Originals: orig, Claim: claim, Leases: active, Listeners: e.Kernel.Listeners}
	p, err := plan.Build(cfg, obs, opt)
	if err != nil {
		return nil, nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(e.Backends)) {
		bp, err := e.Backends[name].Plan(ctx, whole.ForBackend(name))
		if err != nil {
			return nil, nil, fmt.Errorf("planning backend %q: %w", name, err)
		}
		p.Parts = append(p.Parts, plan.Part{Backend: name, Plan: bp})
	}
	return p, obs, nil
}

// linuxPart is the part of cfg this host's Linux datapath carries.
func (e *Engine) linuxPart(cfg *model.Config) *model.Config {
	return cfg.ForBackend(model.BackendLinux)
}

// checkBackends refuses networks that name a backend the engine lacks.
func (e *Engine) checkBackends(cfg *model.Config) error {
	var errs []error
	for i, n := range cfg.Networks {
		if _, ok := e.Backends[n.Backend]; ok || n.Backend == model.BackendLinux || n.Backend == "" {
			continue
		}
		have := append([]string{model.BackendLinux}, slices.Sorted(maps.Keys(e.Backends))...)
		errs = append(errs, cfg.Errorf(fmt.Sprintf("networks[%d].backend", i), "%q is not a backend of this kvmnet (it has: %s)", n.Backend, strings.Join(have, ", ")))
	}
	return errors.Join(errs...)
}

// ApplyOptions are what the user of an apply consents to.
type ApplyOptions struct {
	// AllowRemoval lets the apply remove networks, or more than half of
	// the links kvmnet manages (see plan.Removal). Without it such an
	// apply changes nothing and fails with a *RemovalError.
	AllowRemoval bool
}

// RemovalError refuses an apply that would remove what the user did not
// say may go.
type RemovalError struct {
	Source  string
	Removal *plan.Removal
}

func (e *RemovalError) Error() string {
	return fmt.Sprintf("refusing to apply %s: it removes %s; nothing was changed. If that is meant, apply again with --allow-removal (kvmnet plan -f %s shows every step); kvmnet destroy removes everything",
		e.Source, e.Removal, e.Source)
}

// Apply makes the kernel match cfg and, on success, stores doc (the file as
// the user wrote it) as the new desired state. On failure the kernel is
// rolled back and the stored state is unchanged.
func (e *Engine) Apply(ctx context.Context, cfg *model.Config, doc []byte, opt ApplyOptions) (*plan.Plan, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.refusePending(); err != nil {
		return nil, err
	}
	return e.apply(ctx, cfg, doc, opt)
}

// apply is Apply with mu held.
func (e *Engine) apply(ctx context.Context, cfg *model.Config, doc []byte, opt ApplyOptions) (*plan.Plan, error) {
	p, err := e.runChecked(ctx, cfg, true, func(p *plan.Plan, _ *plan.Observed) error {
		if p.Removal != nil && !opt.AllowRemoval {
			return &RemovalError{Source: cfg.Source, Removal: p.Removal}
		}
		return nil
	})
	if err != nil {
		return p, err
	}
	if old, rev, err := e.Store.Desired(); err == nil && rev > 0 && bytes.Equal(old, doc) {
		e.event("apply", p, cfg.Source)
		return p, nil // the same file again: no new revision
	}
	_, err = e.Store.SaveDesiredWith(doc, cfg.Source, store.With{Event: func(rev uint64) *store.Event {
		return eventOf("apply", p, fmt.Sprintf("%s (revision %d)", cfg.Source, rev))
	}})
	if err != nil {
		return p, fmt.Errorf("the kernel was changed but saving the desired state failed: %w", err)
	}
	if err := e.Store.BackupErr(); err != nil {
		e.Log.Warn("the desired state is saved, but its backup is not", "err", err)
	}
	return p, nil
}

// StateLostError is the refusal to converge towards an empty desired state
// when the store has never held one but the kernel holds kvmnet's objects:
// the store was lost (deleted, emptied, replaced), not the networks.
type StateLostError struct {
	// Store is the database's path.
	Store string
	// Found names what kvmnet owns in the kernel.
	Found []string
}

func (e *StateLostError) Error() string {
	return fmt.Sprintf("the state database %s holds no desired state, but the kernel holds kvmnet's %s: the state was lost, not the networks, so nothing is removed. "+
		"Run kvmnet store restore to bring back the last backup (kvmnet store check shows it), or kvmnet apply -f FILE to give the desired state again; kvmnet destroy removes what kvmnet owns",
		e.Store, strings.Join(e.Found, ", "))
}

// stateLost returns a *StateLostError when the store has no revision at
// all while obs holds kvmnet-owned links or tables; nil otherwise.
func (e *Engine) stateLost(obs *plan.Observed) error {
	_, rev, err := e.Store.Desired()
	if err != nil || rev != 0 {
		return err
	}
	var found []string
	for _, name := range obs.Names() {
		l := obs.Links[name]
		switch {
		case plan.IsOwnedBridge(l):
			found = append(found, "bridge "+name)
		case plan.IsOwnedTap(l):
			found = append(found, "tap "+name)
		}
	}
	if obs.Table.Exists {
		found = append(found, "nftables table inet "+plan.TableName)
	}
	if obs.Bridge.Exists {
		found = append(found, "nftables table bridge "+plan.TableName)
	}
	if len(found) == 0 {
		return nil
	}
	return &StateLostError{Store: e.Store.Path(), Found: found}
}

// CheckState fails with a *StateLostError when the store lost the desired
// state of what the kernel holds (see Converge); the daemon checks it
// before it starts.
func (e *Engine) CheckState(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	obs, err := e.Kernel.Observe(ctx, plan.ObserveOptions{})
	if err != nil {
		return err
	}
	return e.stateLost(obs)
}

// Converge re-applies the stored desired state (the daemon's reconcile).
// The desired state is read under the lock: read before it, an apply
// running at the same time could be undone by the old state. A store that
// never held a desired state next to a kernel that holds kvmnet's objects
// is a lost store: Converge then changes nothing and returns a
// *StateLostError.
func (e *Engine) Converge(ctx context.Context) (*plan.Plan, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	cfg, rev, err := e.Desired()
	if err != nil {
		return nil, err
	}
	var check func(*plan.Plan, *plan.Observed) error
	if rev == 0 {
		check = func(p *plan.Plan, obs *plan.Observed) error {
			if p.Empty() {
				return nil
			}
			return e.stateLost(obs)
		}
	}
	p, err := e.runChecked(ctx, cfg, false, check)
	if err == nil {
		// Anything a reconcile had to do is drift: the kernel had moved
		// away from the desired state.
		e.event("reconcile", p, "repaired drift")
	}
	return p, err
}

// event records what a non-empty plan did, for `kvmnet events`. Failing to
// record it is logged, never fatal: the kernel change stands.
func (e *Engine) event(kind string, p *plan.Plan, what string) {
	ev := eventOf(kind, p, what)
	if ev == nil {
		return
	}
	if err := e.Store.AddEvent(*ev); err != nil {
		e.Log.Warn("recording event failed", "kind", kind, "err", err)
	}
}

// eventOf is the event that records p, or nil when p did nothing.
func eventOf(kind string, p *plan.Plan, what string) *store.Event {
	if p == nil || p.Empty() {
		return nil
	}
	var objects []string
	for _, a := range p.Actions {
		if a.Link() != "" && !slices.Contains(objects, a.Link()) {
			objects = append(objects, a.Link())
		}
	}
	return &store.Event{Kind: kind, Object: strings.Join(objects, ","), Message: what + ": " + p.Summary()}
}

// Destroy removes everything kvmnet owns, puts back the sysctls it changed
// and forgets the desired state.
func (e *Engine) Destroy(ctx context.Context) (*plan.Plan, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.refusePending(); err != nil {
		return nil, err
	}
	p, err := e.run(ctx, &model.Config{Source: "destroy"})
	if err != nil {
		return p, err
	}
	e.event("destroy", p, "destroy")
	if _, err := e.Store.SaveDesired(nil, "destroy"); err != nil {
		return p, err
	}
	return p, nil
}

// run plans and applies cfg; caller holds mu.
func (e *Engine) run(ctx context.Context, cfg *model.Config) (*plan.Plan, error) {
	return e.runChecked(ctx, cfg, false, nil)
}

// runChecked is run, with check deciding on the plan before anything is
// applied: an error from it stops the apply before it starts.
func (e *Engine) runChecked(ctx context.Context, cfg *model.Config, fresh bool, check func(*plan.Plan, *plan.Observed) error) (*plan.Plan, error) {
	p, obs, err := e.planObserved(ctx, cfg, fresh)
	if err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(p, obs); err != nil {
			return p, err
		}
	}
	return p, e.applyPlan(ctx, p)
}

// applyPlan applies p, made from a fresh observation, with the journal
// and the hooks that keep originals, then the other backends' parts, and
// forgets the originals that are back in place; caller holds mu.
func (e *Engine) applyPlan(ctx context.Context, p *plan.Plan) error {
	if p.Empty() {
		return nil
	}
	e.Log.Info("applying", "actions", p.Summary(), "waiting", len(p.Waiting))
	j := journal{e.Journal}
	hooks := apply.Hooks{BeforeSysctl: e.Store.SetOriginal, BeforeCreate: j.add, BeforeConvert: e.keepUplink}
	revert, err := apply.Run(ctx, e.Kernel, p, hooks, e.Log)
	if err != nil {
		var ae *apply.Error
		if errors.As(err, &ae) && ae.Rollback == nil {
			err = errors.Join(err, j.clear())
		}
		return err
	}
	if err := e.applyParts(ctx, p, revert); err != nil {
		return errors.Join(err, j.clear())
	}
	if err := j.clear(); err != nil {
		return err
	}
	// Originals that are back in place are forgotten, so the next change
	// records the value of that time.
	var errs []error
	released := map[string]bool{}
	for _, a := range p.Actions {
		switch a.Op() {
		case plan.OpRelease:
			released[a.Link()] = true
		case plan.OpConvert:
			released[a.Link()] = false // converted again, the other way
		}
	}
	for link, gone := range released {
		if gone {
			// The uplink has its configuration back.
			errs = append(errs, e.Store.DeleteOriginal(plan.UplinkOriginalKey(link)))
		}
	}
	for _, a := range p.Actions {
		a, ok := a.(plan.SetSysctl)
		if !ok {
			continue
		}
		if orig, _ := e.Store.Originals(); orig[a.Key] == a.Value {
			errs = append(errs, e.Store.DeleteOriginal(a.Key))
		}
	}
	return errors.Join(errs...)
}

// applyParts applies the other backends' plans after the Linux one. When
// one fails (and has undone its own steps), those applied before it are
// reverted, last first, and the Linux datapath by revert.
func (e *Engine) applyParts(ctx context.Context, p *plan.Plan, revert func() error) error {
	var done []plan.Part
	for _, part := range p.Parts {
		if part.Plan.Empty() {
			continue
		}
		err := e.Backends[part.Backend].Apply(ctx, part.Plan)
		if err == nil {
			done = append(done, part)
			continue
		}
		var errs []error
		for i := len(done) - 1; i >= 0; i-- {
			if rerr := e.Backends[done[i].Backend].Revert(context.Background(), done[i].Plan); rerr != nil {
				errs = append(errs, fmt.Errorf("reverting backend %q: %w", done[i].Backend, rerr))
			}
		}
		if rerr := revert(); rerr != nil {
			errs = append(errs, fmt.Errorf("reverting the linux datapath: %w", rerr))
		}
		if len(errs) > 0 {
			return fmt.Errorf("applying backend %q: %w; reverting what was applied before it also failed, the host may be half-changed (run the apply again): %w", part.Backend, err, errors.Join(errs...))
		}
		return fmt.Errorf("applying backend %q: %w; everything applied before it was reverted, nothing changed", part.Backend, err)
	}
	return nil
}

// keepUplink records an uplink's configuration before its first
// conversion. A conversion repeated later (the uplink was taken off its
// bridge by hand) keeps the first record (SetOriginal keeps the first
// value): that is what destroy gives back.
func (e *Engine) keepUplink(uplink string, u plan.Uplink) error {
	u.Taken = time.Now().UTC()
	v, err := plan.EncodeUplink(u)
	if err != nil {
		return err
	}
	return e.Store.SetOriginal(plan.UplinkOriginalKey(uplink), v)
}
