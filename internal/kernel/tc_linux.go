package kernel

import "github.com/kvmnet/kvmnet/internal/plan"

// SetHTB implements plan.Tc.
func (h *Host) SetHTB(name string, s plan.HTB) error { return h.Link.SetHTB(name, s) }

// DelHTB implements plan.Tc.
func (h *Host) DelHTB(name string) error { return h.Link.DelHTB(name) }
