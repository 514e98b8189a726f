package applytest

import "github.com/kvmnet/kvmnet/internal/plan"

func (f *Failing) SetVLANFiltering(b string, on bool) error {
	return f.do(func() error { return f.K.SetVLANFiltering(b, on) })
}

func (f *Failing) SetPortVLANs(p string, self bool, have, want []plan.VLAN) error {
	return f.do(func() error { return f.K.SetPortVLANs(p, self, have, want) })
}

func (f *Failing) AddVLANLink(n, parent string, id int, a string) error {
	return f.do(func() error { return f.K.AddVLANLink(n, parent, id, a) })
}
