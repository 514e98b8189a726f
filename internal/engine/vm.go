package engine

import (
	"context"

	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// AttachInterface attaches one VM interface to the stored desired state
// and makes the kernel match: what a libvirt hook or an orchestrator asks
// at a VM's start. Like AddForward, the edit is checked against the parsed
// desired state (model.Config.WithInterface, every check a file gets),
// planned from a fresh observation, applied with rollback and stored as a
// new revision; a refused edit changes nothing.
func (e *Engine) AttachInterface(ctx context.Context, a model.Attach, ed model.Edit) (*plan.Plan, *model.Config, error) {
	return e.edit(ctx, ed, func(c *model.Config) (*model.Config, error) {
		return c.WithInterface(a, ed)
	})
}

// DetachInterface removes the interface of vm with tap tap, or all of
// vm's interfaces when tap is "", from the stored desired state (see
// model.Config.WithoutInterface) and makes the kernel match: a tap kvmnet
// created is deleted, an adopted one is set free. See AttachInterface.
func (e *Engine) DetachInterface(ctx context.Context, vm, tap string, ed model.Edit) (*plan.Plan, *model.Config, error) {
	return e.edit(ctx, ed, func(c *model.Config) (*model.Config, error) {
		return c.WithoutInterface(vm, tap, ed)
	})
}
