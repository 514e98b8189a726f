package engine

import (
	"context"
	"fmt"

	"github.com/kvmnet/kvmnet/internal/apply"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

// AttachPort adopts tap, a VM interface of the desired state that has just
// appeared: it is enslaved to its network's bridge and brought up (and
// isolated, if asked). Its port security elements are in the tables
// already: they are keyed by the tap's name and are there from the apply
// that configured it. This is what a converge would do for the new tap,
// without observing and planning everything else (at a thousand ports
// that is most of the time); the caller converges afterwards as a safety
// net. It reports whether it changed anything; it does nothing when the
// tap's bridge is not kvmnet's bridge of that network (the converge
// handles that).
//
// It does not wait for an apply or converge in progress (that would be
// most of its time at a thousand ports): racing one, it does at most what
// that one does too (enslaving is idempotent), and the converge that
// follows undoes it if a new desired state no longer has the tap.
func (e *Engine) AttachPort(ctx context.Context, tap string) (bool, error) {
	whole, _, err := e.Desired()
	if err != nil {
		return false, err
	}
	cfg := e.linuxPart(whole)
	for i := range cfg.Networks {
		n := &cfg.Networks[i]
		for _, p := range cfg.Ports(n.Name) {
			if p.Iface.Tap != tap || p.Iface.CreateTap {
				continue
			}
			l, ok, err := e.Kernel.LinkState(tap)
			if err != nil || !ok || l.Master == n.Bridge {
				return false, err
			}
			br, ok, err := e.Kernel.LinkState(n.Bridge)
			if err != nil || !ok || br.Alias != plan.BridgeAlias(n.Name) {
				return false, err
			}
			// The planner's own steps for one port, applied with
			// rollback like any plan.
			var vlans []plan.VLAN
			if n.VLANs {
				vlans = plan.PortVLANs(p.Iface.VLAN)
			}
			p2 := &plan.Plan{Actions: plan.AdoptPort(l, n.Bridge, p.Iface.Security.Isolated, vlans)}
			if err := apply.Apply(ctx, e.Kernel, p2, apply.Hooks{}, e.Log); err != nil {
				return false, err
			}
			ev := store.Event{Kind: "reconcile", Object: tap, Message: fmt.Sprintf("adopted tap %s of vm %q on bridge %s", tap, p.VM, n.Bridge)}
			if err := e.Store.AddEvent(ev); err != nil {
				e.Log.Warn("recording event failed", "kind", ev.Kind, "err", err)
			}
			return true, nil
		}
	}
	return false, nil
}
