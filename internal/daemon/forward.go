package daemon

import (
	"context"
	"time"

	"github.com/kvmnet/kvmnet/internal/api"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
)

var _ api.ForwardBackend = (*Daemon)(nil)

// AddForward implements api.ForwardBackend: the engine edits the desired
// state it holds parsed and applies it, then the daemon serves the new
// state, as after an apply.
func (d *Daemon) AddForward(ctx context.Context, network string, f model.Forward, ed model.Edit) (*plan.Plan, error) {
	start := time.Now()
	p, cfg, err := d.opt.Engine.AddForward(ctx, network, f, ed)
	return d.served(start, p, cfg, err)
}

// RemoveForward implements api.ForwardBackend; see AddForward.
func (d *Daemon) RemoveForward(ctx context.Context, network, port, proto string, ed model.Edit) (*plan.Plan, error) {
	start := time.Now()
	p, cfg, err := d.opt.Engine.RemoveForward(ctx, network, port, proto, ed)
	return d.served(start, p, cfg, err)
}

// served does what Apply does after the engine's apply, for an edit that
// started at start.
func (d *Daemon) served(start time.Time, p *plan.Plan, cfg *model.Config, err error) (*plan.Plan, error) {
	d.metrics.ObserveApply(time.Since(start), err)
	if err != nil {
		return p, err
	}
	d.restartRecreated(p)
	d.setConfig(cfg)
	return p, nil
}

var _ api.InterfaceBackend = (*Daemon)(nil)

// AttachInterface implements api.InterfaceBackend; see AddForward. A tap
// that does not exist yet is adopted when it appears, as after an apply.
func (d *Daemon) AttachInterface(ctx context.Context, a model.Attach, ed model.Edit) (*plan.Plan, error) {
	start := time.Now()
	p, cfg, err := d.opt.Engine.AttachInterface(ctx, a, ed)
	return d.served(start, p, cfg, err)
}

// DetachInterface implements api.InterfaceBackend; see AddForward.
func (d *Daemon) DetachInterface(ctx context.Context, vm, tap string, ed model.Edit) (*plan.Plan, error) {
	start := time.Now()
	p, cfg, err := d.opt.Engine.DetachInterface(ctx, vm, tap, ed)
	return d.served(start, p, cfg, err)
}
