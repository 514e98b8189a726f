package applytest

import "github.com/kvmnet/kvmnet/internal/plan"

func (f *Failing) SetHTB(n string, h plan.HTB) error {
	return f.do(func() error { return f.K.SetHTB(n, h) })
}

func (f *Failing) DelHTB(n string) error { return f.do(func() error { return f.K.DelHTB(n) }) }
