package daemon

import (
	"context"
	"time"

	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

// expireRetry is how soon a rollback that failed is tried again.
const expireRetry = 2 * time.Second

// ApplyConfirm implements api.Backend: the daemon holds the timer, so the
// rollback happens even when the CLI that asked is gone.
func (d *Daemon) ApplyConfirm(ctx context.Context, cfg *model.Config, doc []byte, window time.Duration, opt engine.ApplyOptions) (*plan.Plan, *store.Pending, error) {
	start := time.Now()
	p, pend, err := d.opt.Engine.ApplyConfirm(ctx, cfg, doc, window, 0, opt)
	d.metrics.ObserveApply(time.Since(start), err)
	if err != nil {
		// A failed probe rolled back already: serve what stands now.
		d.reload(p)
		return p, pend, err
	}
	d.restartRecreated(p)
	d.setConfig(cfg)
	if pend != nil {
		d.armConfirm(*pend)
	}
	return p, pend, nil
}

// Pending implements api.Backend.
func (d *Daemon) Pending() (*store.Pending, error) { return d.opt.Engine.Pending() }

// Confirm implements api.Backend.
func (d *Daemon) Confirm() (*store.Pending, error) { return d.opt.Engine.Confirm() }

// Expire implements api.Backend.
func (d *Daemon) Expire(ctx context.Context, id, reason string) (*plan.Plan, error) {
	if reason == "" {
		reason = "expired by request"
	}
	p, err := d.opt.Engine.Expire(ctx, id, reason)
	if err == nil && p != nil {
		d.reload(p)
	}
	return p, err
}

// armConfirm rolls pend back at its deadline unless it was confirmed by
// then; a rollback that fails is retried.
func (d *Daemon) armConfirm(pend store.Pending) {
	ctx := d.ctx
	go func() {
		t := time.NewTimer(time.Until(pend.Deadline))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			p, err := d.opt.Engine.Expire(ctx, pend.ID, "not confirmed in time")
			if err == nil {
				if p != nil {
					d.reload(p)
				}
				return
			}
			d.log.Error("rolling back an unconfirmed apply failed (retrying)", "revision", pend.Revision, "err", err)
			t.Reset(expireRetry)
		}
	}()
}

// reload serves the stored desired state after the engine changed it
// behind the API (a rollback).
func (d *Daemon) reload(p *plan.Plan) {
	cfg, _, err := d.opt.Engine.Desired()
	if err != nil {
		d.log.Error("reading the desired state", "err", err)
		return
	}
	if p != nil {
		d.restartRecreated(p)
	}
	d.setConfig(cfg)
}
