package engine

import (
	"context"
	"fmt"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/kvmnet/kvmnet/internal/apply"
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
	p, err := e.runEdit(ctx, next)
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

// runEdit plans cfg and applies the plan; caller holds mu. An edit of
// forwards normally plans element edits of the nftables table alone (and
// cut connections); those are applied with their inverse as undo, not a
// saved copy of the table (see elementKernel). Anything more means the
// kernel had drifted from the desired state, and the edit takes the path
// of any apply.
func (e *Engine) runEdit(ctx context.Context, cfg *model.Config) (*plan.Plan, error) {
	p, err := e.plan(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if p.Empty() {
		return p, nil
	}
	k, ok := elementsOnly(e.Kernel, p)
	if !ok {
		// The plan came from a fresh observation: apply it as it is.
		return p, e.applyPlan(ctx, p)
	}
	e.Log.Info("applying", "actions", p.Summary())
	return p, apply.Apply(ctx, k, p, apply.Hooks{}, e.Log)
}

// elementKernel is the kernel for a plan whose nftables changes only add
// and delete elements. apply undoes an nftables change by restoring a copy
// of the table saved before it, and `nft list table` takes 200 ms with
// 10,000 forwards where the change itself takes 5 ms; the undo of an
// element edit is the inverse edit, which needs no copy.
type elementKernel struct {
	Kernel
	changes map[knftables.Family]*plan.NftChange
}

// elementsOnly returns k wrapped for p when p's only actions are element
// edits of nftables tables, at most one per table, and cut connections.
func elementsOnly(k Kernel, p *plan.Plan) (elementKernel, bool) {
	ek := elementKernel{Kernel: k, changes: map[knftables.Family]*plan.NftChange{}}
	for _, a := range p.Actions {
		switch a := a.(type) {
		case plan.CutFlows:
		case *plan.NftChange:
			if a.Rebuild || a.Delete || ek.changes[a.Ruleset.Family] != nil {
				return ek, false
			}
			ek.changes[a.Ruleset.Family] = a
		default:
			return ek, false
		}
	}
	return ek, true
}

// NftSnapshot saves nothing: NftRestore knows the change to undo.
func (k elementKernel) NftSnapshot(context.Context, knftables.Family) (string, error) {
	return "", nil
}

// NftRestore undoes the element edit of family's table by the inverse
// edit, in one transaction.
func (k elementKernel) NftRestore(ctx context.Context, family knftables.Family, _ string) error {
	ch := k.changes[family]
	if ch == nil {
		return fmt.Errorf("undoing the change of nftables table %s %s: no change was made to it", family, plan.TableName)
	}
	return k.Kernel.NftApply(ctx, &plan.NftChange{Ruleset: ch.Ruleset, Version: ch.Version, Add: ch.Del, Del: ch.Add})
}
