// Package apply carries out a plan through the kernel backends. Every step
// that succeeds pushes its inverse; if a step fails, the inverses run in
// reverse order so the kernel is left as it was before the apply.
package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// Kernel is what apply needs from the backends, one contract per
// concern; the contracts are plan's (a plan's steps run on them), named
// here too for the packages that implement and wrap them.
type (
	Kernel    = plan.Kernel
	Links     = plan.Links
	Addresses = plan.Addresses
	Uplinks   = plan.Uplinks
	Sysctls   = plan.Sysctls
	Nftables  = plan.Nftables
	Conntrack = plan.Conntrack
	VLANs     = plan.VLANs
	// Hooks let the caller persist what must survive a crash.
	Hooks = plan.Hooks
)

// Error is a failed apply: the step that failed and whether the rollback
// restored the previous state.
type Error struct {
	Step     plan.Action
	Err      error
	Rollback error // nil when every done step was undone
}

func (e *Error) Error() string {
	s := fmt.Sprintf("applying %q: %v", e.Step.String(), e.Err)
	if e.Rollback != nil {
		return s + fmt.Sprintf("; rolling back also failed, the kernel may be half-changed (run the apply again): %v", e.Rollback)
	}
	return s + "; every step done before it was undone, nothing changed"
}

func (e *Error) Unwrap() error { return e.Err }

// Apply runs p's actions in order. On failure it undoes the steps already
// done, in reverse, and returns an *Error.
func Apply(ctx context.Context, k Kernel, p *plan.Plan, hooks Hooks, log *slog.Logger) error {
	_, err := Run(ctx, k, p, hooks, log)
	return err
}

// Run is Apply, returning on success what undoes the whole plan: an
// apply of several backends that fails after this one has to take this
// one back too.
func Run(ctx context.Context, k Kernel, p *plan.Plan, hooks Hooks, log *slog.Logger) (revert func() error, err error) {
	var undo []func() error
	for i := 0; i < len(p.Actions); i++ {
		a := p.Actions[i]
		if err := ctx.Err(); err != nil {
			return nil, rollback(a, err, undo, log)
		}
		if a.Op() == plan.OpDelLink {
			// Deletions come last and do not depend on each other: run a
			// whole run of them at once (see link.DeleteAll for why).
			j := i
			for j < len(p.Actions) && p.Actions[j].Op() == plan.OpDelLink {
				j++
			}
			batch := p.Actions[i:j]
			names := make([]string, len(batch))
			for n, b := range batch {
				names[n] = b.Link()
			}
			var failed *plan.Action
			var cause error
			errs := k.DeleteLinks(names)
			deleted := map[string]bool{}
			for n, err := range errs {
				deleted[names[n]] = err == nil
			}
			for n, err := range errs {
				if err == nil {
					gone := batch[n].(plan.DelLink)
					undo = append(undo, func() error { return gone.Recreate(k, deleted) })
				} else if failed == nil {
					failed, cause = &batch[n], err
				}
			}
			if failed != nil {
				return nil, rollback(*failed, cause, undo, log)
			}
			i = j - 1
			continue
		}
		u, err := a.Do(ctx, k, hooks)
		if err != nil {
			return nil, rollback(a, err, undo, log)
		}
		if u != nil {
			undo = append(undo, u)
		}
		log.Debug("applied", "action", a.Op(), "link", a.Link())
	}
	return func() error { return errors.Join(undoAll(undo)...) }, nil
}

// undoAll runs undo in reverse and keeps going on errors: it undoes as
// much as it can and returns every failure.
func undoAll(undo []func() error) []error {
	var errs []error
	for i := len(undo) - 1; i >= 0; i-- {
		if err := undo[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func rollback(a plan.Action, cause error, undo []func() error, log *slog.Logger) error {
	errs := undoAll(undo)
	log.Warn("apply failed, rolled back", "failed", a.Op(), "link", a.Link(), "undone", len(undo), "rollbackErrors", len(errs))
	return &Error{Step: a, Err: cause, Rollback: errors.Join(errs...)}
}
