package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/kvmnet/kvmnet/internal/kernel/probe"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

// ProbeTimeout bounds the gateway probe after an apply --confirm.
const ProbeTimeout = 3 * time.Second

// ErrPending is returned (wrapped) when an apply or destroy is refused
// because another apply waits for confirmation.
var ErrPending = errors.New("an apply is waiting for confirmation")

// Prober checks the host's connectivity after an apply --confirm. The
// default probes the gateway of the default route the host had before.
type Prober interface {
	DefaultGateway() (netip.Addr, error)
	Gateway(ctx context.Context, gw netip.Addr, timeout time.Duration) (string, error)
}

// kernelProber reads the default route from the engine's kernel and
// probes with package probe.
type kernelProber struct {
	k interface {
		DefaultGateway() (netip.Addr, error)
	}
}

func (p kernelProber) DefaultGateway() (netip.Addr, error) {
	if p.k == nil {
		return netip.Addr{}, nil
	}
	return p.k.DefaultGateway()
}

func (kernelProber) Gateway(ctx context.Context, gw netip.Addr, t time.Duration) (string, error) {
	return probe.Gateway(ctx, gw, t)
}

func (e *Engine) prober() Prober {
	if e.Prober != nil {
		return e.Prober
	}
	return kernelProber{k: e.Kernel}
}

// refusePending fails when an apply waits for confirmation.
func (e *Engine) refusePending() error {
	p, err := e.Store.Pending()
	if err != nil || p == nil {
		return err
	}
	return fmt.Errorf("%w (revision %d, rolled back in %s unless confirmed): run `kvmnet confirm` to keep it, or wait for the rollback, then try again",
		ErrPending, p.Revision, time.Until(p.Deadline).Round(time.Second))
}

// ApplyConfirm applies cfg like Apply, then probes the default gateway the
// host had before. If the probe fails, the apply is rolled back at once
// and the error says why. Otherwise the apply is pending: Confirm keeps
// it; Expire, called by whoever holds the timer (timer is that process's
// PID, 0 for the daemon) once window has passed, rolls it back.
func (e *Engine) ApplyConfirm(ctx context.Context, cfg *model.Config, doc []byte, window time.Duration, timer int, opt ApplyOptions) (*plan.Plan, *store.Pending, error) {
	e.mu.Lock()
	if err := e.refusePending(); err != nil {
		e.mu.Unlock()
		return nil, nil, err
	}
	_, prev, err := e.Store.Desired()
	if err != nil {
		e.mu.Unlock()
		return nil, nil, err
	}
	gw, err := e.prober().DefaultGateway()
	if err != nil {
		e.mu.Unlock()
		return nil, nil, err
	}
	p, err := e.apply(ctx, cfg, doc, opt)
	if err != nil {
		e.mu.Unlock()
		return p, nil, err
	}
	_, rev, err := e.Store.Desired()
	if err != nil || rev == prev {
		// The same state again: nothing to confirm or roll back.
		e.mu.Unlock()
		return p, nil, err
	}
	var id [8]byte
	rand.Read(id[:])
	pend := store.Pending{
		ID: hex.EncodeToString(id[:]), Revision: rev, Previous: prev, Source: cfg.Source,
		Started: time.Now(), Deadline: time.Now().Add(window), Timer: timer,
	}
	// Recorded before the probe: a crash from here on still rolls back.
	if err := e.Store.SetPending(pend); err != nil {
		e.mu.Unlock()
		return p, nil, err
	}
	e.mu.Unlock()

	if !gw.IsValid() {
		pend.Probe = "not probed: the host had no IPv4 default route before the apply"
	} else if what, err := e.prober().Gateway(ctx, gw, ProbeTimeout); err != nil {
		pend.Probe = "failed: " + err.Error()
		if _, rerr := e.Expire(context.WithoutCancel(ctx), pend.ID, "the gateway probe failed: "+err.Error()); rerr != nil {
			return p, &pend, fmt.Errorf("the host lost its gateway after the apply (%v) and rolling back failed: %w", err, rerr)
		}
		return p, &pend, fmt.Errorf("the host lost its gateway after the apply (%v): rolled back to revision %d", err, prev)
	} else {
		pend.Probe = "ok: " + what
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if cur, err := e.Store.Pending(); err == nil && cur != nil && cur.ID == pend.ID {
		if err := e.Store.SetPending(pend); err != nil {
			return p, &pend, err
		}
	}
	return p, &pend, nil
}

// Pending returns the apply waiting for confirmation, or nil.
func (e *Engine) Pending() (*store.Pending, error) { return e.Store.Pending() }

// Confirm keeps the pending apply.
func (e *Engine) Confirm() (*store.Pending, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, err := e.Store.TakePending("")
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, errors.New("no apply is waiting for confirmation (it may have been rolled back already: see kvmnet events)")
	}
	if err := e.Store.AddEvent(store.Event{Kind: "confirm", Message: fmt.Sprintf("revision %d confirmed", p.Revision)}); err != nil {
		e.Log.Warn("recording event failed", "kind", "confirm", "err", err)
	}
	return p, nil
}

// Expire rolls back the pending apply id (any, when id is ""): the
// revision from before it is applied again, or everything is destroyed
// when there was none. It does nothing when that apply was confirmed or
// rolled back already. A rollback that fails leaves the apply pending, so
// the timer can try again.
func (e *Engine) Expire(ctx context.Context, id, reason string) (*plan.Plan, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	pend, err := e.Store.TakePending(id)
	if err != nil || pend == nil {
		return nil, err
	}
	var doc []byte
	if pend.Previous != 0 {
		if doc, err = e.Store.Revision(pend.Previous); err != nil {
			return nil, errors.Join(err, e.Store.SetPending(*pend))
		}
	}
	note := fmt.Sprintf("rollback of unconfirmed revision %d (%s)", pend.Revision, reason)
	cfg := &model.Config{Source: note}
	if len(doc) > 0 {
		if cfg, err = model.ParseStored(note, doc); err != nil {
			return nil, errors.Join(err, e.Store.SetPending(*pend))
		}
	}
	p, err := e.run(ctx, cfg)
	if err != nil {
		return p, errors.Join(err, e.Store.SetPending(*pend))
	}
	if _, err := e.Store.SaveDesired(doc, note); err != nil {
		return p, err
	}
	e.event("rollback", p, note)
	e.Log.Warn("rolled back an unconfirmed apply", "revision", pend.Revision, "to", pend.Previous, "reason", reason)
	return p, nil
}
