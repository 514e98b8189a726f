// Package applytest injects failures into apply.Kernel, for the
// rollback-at-every-step tests on the real kernel and on the fake.
package applytest

import (
	"context"
	"errors"
	"net/netip"
	"sync"

	"sigs.k8s.io/knftables"

	"github.com/kvmnet/kvmnet/internal/apply"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// ErrInjected is the failure Failing injects.
var ErrInjected = errors.New("injected failure")

// Failing wraps an apply.Kernel and fails its Nth call (counting from 1),
// whichever method it is; every other call goes through. It holds the
// kernel in a field, not embedded: a method added to any contract of
// apply.Kernel does not compile here until it is wrapped, so no method
// can escape the injection (TestEveryMethodInjects checks each does).
type Failing struct {
	K apply.Kernel
	N int

	mu    sync.Mutex
	calls int
}

var _ apply.Kernel = (*Failing)(nil)

// Calls is how many calls were made.
func (f *Failing) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *Failing) step() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls == f.N {
		return ErrInjected
	}
	return nil
}

// do runs call unless this is the call to fail.
func (f *Failing) do(call func() error) error {
	if err := f.step(); err != nil {
		return err
	}
	return call()
}

func (f *Failing) AddBridge(n string, mtu int, a string) error {
	return f.do(func() error { return f.K.AddBridge(n, mtu, a) })
}

func (f *Failing) AddTap(n string, s plan.TapSpec, a string) error {
	return f.do(func() error { return f.K.AddTap(n, s, a) })
}

func (f *Failing) DeleteLink(n string) error { return f.do(func() error { return f.K.DeleteLink(n) }) }

// DeleteLinks counts one call per link.
func (f *Failing) DeleteLinks(names []string) []error {
	errs := make([]error, len(names))
	for i, n := range names {
		errs[i] = f.do(func() error { return f.K.DeleteLinks([]string{n})[0] })
	}
	return errs
}

func (f *Failing) SetMaster(n, m string) error {
	return f.do(func() error { return f.K.SetMaster(n, m) })
}
func (f *Failing) SetMTU(n string, mtu int) error {
	return f.do(func() error { return f.K.SetMTU(n, mtu) })
}
func (f *Failing) SetHWAddr(n, mac string) error {
	return f.do(func() error { return f.K.SetHWAddr(n, mac) })
}
func (f *Failing) SetAlias(n, a string) error {
	return f.do(func() error { return f.K.SetAlias(n, a) })
}
func (f *Failing) SetUp(n string, up bool) error {
	return f.do(func() error { return f.K.SetUp(n, up) })
}
func (f *Failing) SetIsolated(n string, on bool) error {
	return f.do(func() error { return f.K.SetIsolated(n, on) })
}
func (f *Failing) SetBridgeNF(n string, on bool) error {
	return f.do(func() error { return f.K.SetBridgeNF(n, on) })
}
func (f *Failing) AddAddr(n string, p netip.Prefix) error {
	return f.do(func() error { return f.K.AddAddr(n, p) })
}
func (f *Failing) DelAddr(n string, p netip.Prefix) error {
	return f.do(func() error { return f.K.DelAddr(n, p) })
}
func (f *Failing) Convert(u string, up plan.Uplink) error {
	return f.do(func() error { return f.K.Convert(u, up) })
}
func (f *Failing) Release(u string, up plan.Uplink) error {
	return f.do(func() error { return f.K.Release(u, up) })
}
func (f *Failing) SetSysctl(k, v string) error {
	return f.do(func() error { return f.K.SetSysctl(k, v) })
}

func (f *Failing) DeleteFlows(flows []plan.Flow) (n int, err error) {
	err = f.do(func() error {
		n, err = f.K.DeleteFlows(flows)
		return err
	})
	return n, err
}

func (f *Failing) NftApply(ctx context.Context, ch *plan.NftChange) error {
	return f.do(func() error { return f.K.NftApply(ctx, ch) })
}

func (f *Failing) NftSnapshot(ctx context.Context, fam knftables.Family) (s string, err error) {
	err = f.do(func() error {
		s, err = f.K.NftSnapshot(ctx, fam)
		return err
	})
	return s, err
}

func (f *Failing) NftRestore(ctx context.Context, fam knftables.Family, s string) error {
	return f.do(func() error { return f.K.NftRestore(ctx, fam, s) })
}
