package link

import (
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/kvmnet/kvmnet/internal/plan"
)

var (
	htbRoot  = netlink.MakeHandle(plan.TcHandle, 0)
	htbClass = netlink.MakeHandle(plan.TcHandle, plan.TcClassMinor)
	htbLeaf  = netlink.MakeHandle(plan.TcLeafHandle, 0)
)

// SetHTB makes h a link's root qdisc and its one class:
//
//	tc qdisc replace dev NAME root handle 6b76: htb default 1
//	tc class replace dev NAME parent 6b76: classid 6b76:1 htb rate R ceil C burst B cburst B
//	tc qdisc replace dev NAME parent 6b76:1 handle 6b77: fq_codel   (Leaf "fq_codel")
//
// With Leaf "", a leaf qdisc left from before is deleted, so the class
// has the kernel's default (pfifo).
func (h *Handle) SetHTB(name string, s plan.HTB) error {
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	idx := l.Attrs().Index
	// htb cannot be changed in place (the kernel answers EINVAL to a
	// replace of the same kind and handle): kvmnet's root is kept when
	// there, and only its class changed.
	qs, err := dump(func() ([]netlink.Qdisc, error) { return h.nl.QdiscList(l) })
	if err != nil {
		return fmt.Errorf("listing qdiscs of link %q: %w", name, err)
	}
	if !slices.ContainsFunc(qs, isHTBRoot) {
		q := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: idx, Parent: netlink.HANDLE_ROOT, Handle: htbRoot})
		q.Defcls = plan.TcClassMinor
		if err := h.nl.QdiscReplace(q); err != nil {
			return fmt.Errorf("adding htb qdisc to link %q: %w", name, err)
		}
	}
	// NewHtbClass takes bits per second and a burst in bytes, and turns
	// them into the kernel's bytes per second and ticks.
	c := netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: idx, Parent: htbRoot, Handle: htbClass},
		netlink.HtbClassAttrs{Rate: s.Rate, Ceil: s.Ceil, Buffer: uint32(s.Burst), Cbuffer: uint32(s.Burst), Quantum: quantum(s.Rate)})
	if err := h.nl.ClassReplace(c); err != nil {
		return fmt.Errorf("setting htb class of link %q to %s: %w", name, s, err)
	}
	if s.Leaf == "" {
		return h.delLeaf(l, qs)
	}
	if s.Leaf != "fq_codel" {
		return fmt.Errorf("link %q: leaf qdisc %q is not one kvmnet makes (want fq_codel)", name, s.Leaf)
	}
	leaf := netlink.NewFqCodel(netlink.QdiscAttrs{LinkIndex: idx, Parent: htbClass, Handle: htbLeaf})
	if err := h.nl.QdiscReplace(leaf); err != nil {
		return fmt.Errorf("adding fq_codel qdisc under the htb class of link %q: %w", name, err)
	}
	return nil
}

// quantum is the bytes the class sends per round: the kernel's default
// (rate/10) is out of its range above 16 mbit and logs "quantum of class
// is big" at every change, so it is kept between a frame and 200,000.
// With one class per qdisc it decides no sharing.
func quantum(rate uint64) uint32 {
	return uint32(min(max(rate/8/10, 1514), 200000))
}

// isHTBRoot reports whether q is kvmnet's root htb.
func isHTBRoot(q netlink.Qdisc) bool {
	a := q.Attrs()
	return a.Parent == netlink.HANDLE_ROOT && a.Handle == htbRoot && q.Type() == "htb"
}

// delLeaf deletes the qdisc under kvmnet's htb class of l, if any, from
// qs, l's qdiscs.
func (h *Handle) delLeaf(l netlink.Link, qs []netlink.Qdisc) error {
	for _, q := range qs {
		if q.Attrs().Parent == htbClass {
			if err := h.nl.QdiscDel(q); err != nil && !IsNotFound(err) {
				return fmt.Errorf("deleting the leaf qdisc of link %q: %w", l.Attrs().Name, err)
			}
		}
	}
	return nil
}

// DelHTB deletes kvmnet's root qdisc of a link (tc qdisc del dev NAME
// root handle 6b76:); the kernel puts its default qdisc back.
func (h *Handle) DelHTB(name string) error {
	l, err := h.byName(name)
	if err != nil {
		return err
	}
	q := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_ROOT, Handle: htbRoot})
	if err := h.nl.QdiscDel(q); err != nil {
		return fmt.Errorf("deleting the htb qdisc of link %q: %w", name, err)
	}
	return nil
}

// HTBs returns kvmnet's htb of every link that has one, by link index,
// from one dump of all qdiscs and one class dump per shaped link.
func (h *Handle) HTBs() (map[int]*plan.HTB, error) {
	qs, err := dump(func() ([]netlink.Qdisc, error) { return h.nl.QdiscList(nil) })
	if err != nil {
		return nil, fmt.Errorf("listing qdiscs: %w", err)
	}
	out := map[int]*plan.HTB{}
	leaves := map[int]string{}
	for _, q := range qs {
		a := q.Attrs()
		switch {
		case isHTBRoot(q):
			out[a.LinkIndex] = &plan.HTB{}
		case a.Parent == htbClass:
			leaves[a.LinkIndex] = q.Type()
		}
	}
	for idx, s := range out {
		dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: idx}}
		cs, err := dump(func() ([]netlink.Class, error) { return h.nl.ClassList(dev, htbRoot) })
		if err != nil {
			return nil, fmt.Errorf("listing tc classes of link %d: %w", idx, err)
		}
		for _, c := range cs {
			hc, ok := c.(*netlink.HtbClass)
			if !ok || hc.Handle != htbClass {
				continue
			}
			// The kernel keeps bytes per second and the burst as the
			// ticks it takes at the rate.
			s.Rate, s.Ceil = hc.Rate*8, hc.Ceil*8
			s.Burst = uint64(netlink.Xmitsize(hc.Rate, hc.Buffer))
		}
		// A leaf other than fq_codel is not kvmnet's: it reads as one to
		// replace.
		s.Leaf = leaves[idx]
	}
	return out, nil
}
