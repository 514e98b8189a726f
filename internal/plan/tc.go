package plan

import (
	"fmt"

	"github.com/kvmnet/kvmnet/internal/model"
)

// shape plans traffic control on the ports into the tc group: the
// ingress of a port's qos (traffic to the guest) is the egress of its
// tap, shaped there by kvmnet's htb (see HTB) with fq_codel as the leaf
// where the kernel has it. The egress of a port's qos (traffic from the
// guest) needs an ifb and tc's mirred action to be shaped; it is refused
// at its key, never ignored.
func (b *builder) shape() {
	for _, name := range sortedKeys(b.wantPorts) {
		dp := b.wantPorts[name]
		if dp.qosPath != "" && !dp.qos.Egress.IsZero() {
			b.refuseEgress(dp)
		}
		l, exists := b.obs.Links[name]
		if !exists && !dp.create {
			continue // waiting for the tap; shaped once it is adopted
		}
		want := b.ingress(dp)
		switch {
		case want == nil && l.HTB != nil:
			b.tc = append(b.tc, DelHTB{Name: name, Prev: *l.HTB})
		case want != nil && (l.HTB == nil || !l.HTB.Same(*want)):
			b.tc = append(b.tc, SetHTB{Name: name, HTB: *want, Prev: l.HTB})
			b.p.Notes = append(b.p.Notes, b.leafNote(name))
		}
	}
	// A tap that left the file keeps its link (libvirt's), not kvmnet's
	// qdisc; a tap kvmnet deletes takes its qdisc with it.
	for _, name := range b.obs.Names() {
		l := b.obs.Links[name]
		if _, wanted := b.wantPorts[name]; wanted || l.HTB == nil || IsOwnedTap(l) {
			continue
		}
		if l.Master != "" && IsOwnedBridge(b.obs.Links[l.Master]) {
			b.tc = append(b.tc, DelHTB{Name: name, Prev: *l.HTB})
		}
	}
}

// ingress is the htb a port's qos wants on its tap, nil for none.
func (b *builder) ingress(dp desiredPort) *HTB {
	if dp.qos.Ingress.IsZero() {
		return nil
	}
	lim := dp.qos.Ingress.Limits()
	h := HTB{
		// The kernel keeps rates in bytes per second: a rate that is
		// not a whole number of bytes would read back as another and
		// be planned again at every converge.
		Rate:  max(lim.Rate/8*8, 8),
		Ceil:  max(lim.Ceil/8*8, 8),
		Burst: lim.Burst,
	}
	if _, lacks := b.obs.Missing[FeatureFqCodel]; !lacks {
		h.Leaf = "fq_codel"
	}
	return &h
}

// leafNote says which leaf a port's htb gets, and why.
func (b *builder) leafNote(tap string) string {
	if why, lacks := b.obs.Missing[FeatureFqCodel]; lacks {
		return fmt.Sprintf("tap %s: htb class with the kernel's default pfifo leaf: this kernel lacks fq_codel (%s)", tap, why)
	}
	return fmt.Sprintf("tap %s: htb class with an fq_codel leaf", tap)
}

// refuseEgress refuses a port's qos egress at its key: shaping what a
// guest sends needs an ifb and tc's mirred action, and policing it with
// nftables is not built yet.
func (b *builder) refuseEgress(dp desiredPort) {
	path := dp.qosPath + ".egress"
	if dp.qos.Egress.Mode == model.ModePolice {
		b.errs = append(b.errs, b.cfg.Errorf(path+".mode", "vm %q: qos egress mode police (an nftables rate limit) is not built yet; remove egress:, or shape traffic to the guest with ingress:", dp.vm))
		return
	}
	if !b.require(FeatureMirred, path, "qos egress") {
		return
	}
	b.errs = append(b.errs, b.cfg.Errorf(path, "vm %q: qos egress (shaping what the guest sends, with an ifb and tc mirred) is not built yet; remove egress:, or shape traffic to the guest with ingress:", dp.vm))
}

// qosFeatures are the features the ports' qos keys need.
func qosFeatures(cfg *model.Config) []Feature {
	var fs []Feature
	for _, vm := range cfg.VMs {
		for _, in := range vm.Interfaces {
			if !in.QoS.Ingress.IsZero() {
				fs = append(fs, FeatureFqCodel)
			}
			if e := in.QoS.Egress; !e.IsZero() && e.Mode != model.ModePolice {
				fs = append(fs, FeatureMirred)
			}
		}
	}
	return fs
}
