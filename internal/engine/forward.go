package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

// AddForward adds f to the forwards of network in the stored desired state
// and makes the kernel match. It is `kvmnet apply` of the edited file,
// without reading the file: the edit is checked against the parsed desired
// state (model.Config.WithForward, with every check a file gets), the plan
// starts from a fresh observation as always, and the new document is
// written from the edited config and stored as a new revision. With 10,000
// forwards, parsing and checking the file twice took most of a second.
//
// It returns the plan it applied and the new desired state (which the
// caller must not change).
func (e *Engine) AddForward(ctx context.Context, network string, f model.Forward, ed model.Edit) (*plan.Plan, *model.Config, error) {
	return e.edit(ctx, ed, func(c *model.Config) (*model.Config, error) {
		return c.WithForward(network, f, ed)
	})
}

// RemoveForward removes the forwards of network on port and proto (see
// model.Config.WithoutForward) from the stored desired state and makes the
// kernel match, which cuts the connections that went through them. See
// AddForward.
func (e *Engine) RemoveForward(ctx context.Context, network, port, proto string, ed model.Edit) (*plan.Plan, *model.Config, error) {
	return e.edit(ctx, ed, func(c *model.Config) (*model.Config, error) {
		return c.WithoutForward(network, port, proto, ed)
	})
}

// edit changes the desired state with change, applies the result and, on
// success, stores it as a new revision named ed.Name. On failure the
// kernel is rolled back and the stored state is unchanged, as with Apply.
func (e *Engine) edit(ctx context.Context, ed model.Edit, change func(*model.Config) (*model.Config, error)) (*plan.Plan, *model.Config, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.refusePending(); err != nil {
		return nil, nil, err
	}
	start := time.Now()
	cfg, _, err := e.desiredForEdit()
	if err != nil {
		return nil, nil, err
	}
	loaded := time.Now()
	next, err := change(cfg)
	if err != nil {
		return nil, nil, err
	}
	checked := time.Now()
	// Planned from a fresh observation and applied like any change; an
	// edit of forwards is normally element edits alone, undone by their
	// inverse (plan.NftChange.Do), so no copy of the table is taken.
	p, err := e.run(ctx, next)
	if err != nil {
		return p, nil, err
	}
	applied := time.Now()
	doc, err := model.Marshal(next)
	if err != nil {
		return p, nil, err
	}
	// The revision, its event and (unless kept in the background) its
	// parsed form in one transaction.
	with := store.With{Event: func(rev uint64) *store.Event {
		return eventOf("apply", p, fmt.Sprintf("%s (revision %d)", ed.Name, rev))
	}}
	if !e.KeepInBackground {
		with.Stamp, with.Parsed = e.encodeParsed(next)
	}
	rev, err := e.Store.SaveDesiredWith(doc, ed.Name, with)
	if err != nil {
		return p, nil, fmt.Errorf("the kernel was changed but saving the desired state failed: %w", err)
	}
	// From now on, messages about the desired state point into the
	// document just stored.
	next.SetDoc(ed.Name, doc)
	e.remember(next, rev)
	if e.KeepInBackground {
		e.keepLater(next, rev)
	}
	e.Log.Debug("edited the desired state", "edit", ed.Name, "revision", rev, "load", loaded.Sub(start),
		"check", checked.Sub(loaded), "apply", applied.Sub(checked), "store", time.Since(applied))
	return p, next, nil
}
