// Package apply carries out a plan through the kernel backends. Every step
// that succeeds pushes its inverse; if a step fails, the inverses run in
// reverse order so the kernel is left as it was before the apply.
package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"sigs.k8s.io/knftables"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// Kernel is what apply needs from the backends, one contract per concern.
// The real one is kernel.Host; package kernel/fake keeps the same state in
// memory, and tests wrap either to inject failures.
type Kernel interface {
	Links
	Addresses
	Uplinks
	Sysctls
	Nftables
	Conntrack
}

// Links are network devices: kvmnet's bridges and taps, and the ports of
// its bridges.
type Links interface {
	AddBridge(name string, mtu int, alias string) error
	AddTap(name string, spec plan.TapSpec, alias string) error
	DeleteLink(name string) error
	// DeleteLinks deletes many links at once (concurrently), returning one
	// error per name.
	DeleteLinks(names []string) []error
	SetMaster(name, master string) error
	SetMTU(name string, mtu int) error
	SetHWAddr(name, mac string) error
	SetAlias(name, alias string) error
	SetUp(name string, up bool) error
	// SetIsolated is the bridge port flag (bridge link set isolated).
	SetIsolated(name string, on bool) error
	// SetBridgeNF sets a bridge's own nf_call_iptables, ip6tables and
	// arptables.
	SetBridgeNF(name string, on bool) error
}

// Addresses are the IP addresses of links.
type Addresses interface {
	AddAddr(name string, p netip.Prefix) error
	DelAddr(name string, p netip.Prefix) error
}

// Uplinks move a host's configuration between an uplink and its bridge.
type Uplinks interface {
	// Convert makes an uplink a bridge port and moves the host's
	// configuration to the bridge; Release undoes it.
	Convert(uplink string, u plan.Uplink) error
	Release(uplink string, u plan.Uplink) error
}

// Sysctls are /proc/sys settings.
type Sysctls interface {
	SetSysctl(key, value string) error
}

// Nftables are kvmnet's tables, changed in one transaction each.
type Nftables interface {
	NftApply(ctx context.Context, ch *plan.NftChange) error
	// NftSnapshot returns what NftRestore needs to put the table of fam
	// back as it is now (nothing, when it does not exist).
	NftSnapshot(ctx context.Context, fam knftables.Family) (string, error)
	NftRestore(ctx context.Context, fam knftables.Family, snapshot string) error
}

// Conntrack is the connection tracking table.
type Conntrack interface {
	// DeleteFlows cuts the tracked connections to flows, returning how
	// many it cut.
	DeleteFlows(flows []plan.Flow) (int, error)
}

// Hooks let the caller persist what must survive a crash.
type Hooks struct {
	// BeforeSysctl is called with the value a sysctl has before kvmnet
	// first changes it, so destroy can put it back even after kill -9.
	BeforeSysctl func(key, prev string) error
	// BeforeCreate is called with the name of a link about to be created,
	// so that an apply killed between creating and marking it can claim
	// it later (plan.Options.Claim).
	BeforeCreate func(name string) error
	// BeforeConvert is called with an uplink's configuration before it
	// is first moved to a bridge, so destroy can give it back even after
	// kill -9.
	BeforeConvert func(uplink string, u plan.Uplink) error
}

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
		if a.Op == plan.OpDelLink {
			// Deletions come last and do not depend on each other: run a
			// whole run of them at once (see link.DeleteAll for why).
			j := i
			for j < len(p.Actions) && p.Actions[j].Op == plan.OpDelLink {
				j++
			}
			batch := p.Actions[i:j]
			names := make([]string, len(batch))
			for n, b := range batch {
				names[n] = b.Link
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
					gone := batch[n].Gone
					undo = append(undo, func() error { return recreate(k, gone, deleted) })
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
		u, err := do(ctx, k, a, hooks)
		if err != nil {
			return nil, rollback(a, err, undo, log)
		}
		if u != nil {
			undo = append(undo, u)
		}
		log.Debug("applied", "action", a.Op, "link", a.Link)
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
	log.Warn("apply failed, rolled back", "failed", a.Op, "link", a.Link, "undone", len(undo), "rollbackErrors", len(errs))
	return &Error{Step: a, Err: cause, Rollback: errors.Join(errs...)}
}

// do runs one action and returns its inverse.
func do(ctx context.Context, k Kernel, a plan.Action, hooks Hooks) (func() error, error) {
	switch a.Op {
	case plan.OpAddBridge, plan.OpAddTap:
		if hooks.BeforeCreate != nil {
			if err := hooks.BeforeCreate(a.Link); err != nil {
				return nil, err
			}
		}
	}
	switch a.Op {
	case plan.OpAddBridge:
		undo := func() error { return k.DeleteLink(a.Link) }
		if err := k.AddBridge(a.Link, a.MTU, a.Alias); err != nil {
			return nil, err
		}
		if a.HWAddr != "" {
			if err := k.SetHWAddr(a.Link, a.HWAddr); err != nil {
				return nil, errors.Join(err, undo())
			}
		}
		return undo, nil
	case plan.OpBridgeNF:
		return func() error { return k.SetBridgeNF(a.Link, true) }, k.SetBridgeNF(a.Link, false)
	case plan.OpConvert:
		if hooks.BeforeConvert != nil {
			if err := hooks.BeforeConvert(a.Link, *a.Uplink); err != nil {
				return nil, err
			}
		}
		return func() error { return k.Release(a.Link, *a.Uplink) }, k.Convert(a.Link, *a.Uplink)
	case plan.OpRelease:
		return func() error { return k.Convert(a.Link, *a.Uplink) }, k.Release(a.Link, *a.Uplink)
	case plan.OpAddTap:
		return func() error { return k.DeleteLink(a.Link) }, k.AddTap(a.Link, a.Tap, a.Alias)
	case plan.OpSetMTU:
		return func() error { return k.SetMTU(a.Link, a.PrevMTU) }, k.SetMTU(a.Link, a.MTU)
	case plan.OpSetAlias:
		return func() error { return k.SetAlias(a.Link, a.PrevAlias) }, k.SetAlias(a.Link, a.Alias)
	case plan.OpSetUp:
		return func() error { return k.SetUp(a.Link, !a.Up) }, k.SetUp(a.Link, a.Up)
	case plan.OpSetMaster:
		return func() error { return k.SetMaster(a.Link, a.PrevMaster) }, k.SetMaster(a.Link, a.Master)
	case plan.OpAddAddr:
		return func() error { return k.DelAddr(a.Link, a.Addr) }, k.AddAddr(a.Link, a.Addr)
	case plan.OpDelAddr:
		return func() error { return k.AddAddr(a.Link, a.Addr) }, k.DelAddr(a.Link, a.Addr)
	case plan.OpSysctl:
		if hooks.BeforeSysctl != nil {
			if err := hooks.BeforeSysctl(a.Key, a.Prev); err != nil {
				return nil, err
			}
		}
		return func() error { return k.SetSysctl(a.Key, a.Prev) }, k.SetSysctl(a.Key, a.Value)
	case plan.OpNft:
		fam := a.Nft.Ruleset.Family
		snap, err := k.NftSnapshot(ctx, fam)
		if err != nil {
			return nil, err
		}
		// The undo must run even when ctx was cancelled.
		return func() error { return k.NftRestore(context.Background(), fam, snap) }, k.NftApply(ctx, a.Nft)
	case plan.OpIsolate:
		return func() error { return k.SetIsolated(a.Link, !a.Up) }, k.SetIsolated(a.Link, a.Up)
	case plan.OpDelLink:
		return func() error { return recreate(k, a.Gone, nil) }, k.DeleteLink(a.Link)
	case plan.OpCtDelete:
		// Cut connections cannot be restored; this step comes last.
		_, err := k.DeleteFlows(a.Flows)
		return nil, err
	}
	return nil, fmt.Errorf("unknown action %q", a.Op)
}

// recreate brings back a link a del-link removed (undo). A bridge gets
// back its ports, except those deleted with it (in deleted): their own
// undo recreates them on it, after this one (taps are deleted before
// bridges, so undone after them).
func recreate(k Kernel, l *plan.Link, deleted map[string]bool) error {
	var err error
	if l.Kind == "bridge" {
		err = k.AddBridge(l.Name, l.MTU, l.Alias)
	} else {
		err = k.AddTap(l.Name, plan.TapSpec{}, l.Alias)
	}
	if err != nil {
		return err
	}
	var errs []error
	if l.Kind != "bridge" && l.HWAddr != "" {
		// A bridge takes its ports' address; a tap keeps the one it had.
		errs = append(errs, k.SetHWAddr(l.Name, l.HWAddr))
	}
	if l.MTU != 0 && l.Kind != "bridge" {
		errs = append(errs, k.SetMTU(l.Name, l.MTU))
	}
	for _, p := range l.Addrs {
		errs = append(errs, k.AddAddr(l.Name, p))
	}
	if l.Master != "" {
		errs = append(errs, k.SetMaster(l.Name, l.Master))
	}
	if l.Up {
		errs = append(errs, k.SetUp(l.Name, true))
	}
	for _, p := range l.Ports {
		if deleted[p.Name] {
			continue
		}
		errs = append(errs, k.SetMaster(p.Name, l.Name))
		if p.Isolated {
			errs = append(errs, k.SetIsolated(p.Name, true))
		}
	}
	return errors.Join(errs...)
}
