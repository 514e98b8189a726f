package fake

import (
	"fmt"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// SetHTB implements plan.Tc; a leaf the kernel lacks (Lacks) is refused
// as the real kernel refuses it.
func (k *Kernel) SetHTB(name string, h plan.HTB) error {
	k.mu.Lock()
	why, lacks := k.Lacks[plan.FeatureFqCodel]
	k.mu.Unlock()
	if lacks && h.Leaf == "fq_codel" {
		return fmt.Errorf("adding qdisc fq_codel to link %q: %s", name, why)
	}
	return k.link(name, func(l *plan.Link) error {
		// A new value, never the old one changed: observations share it.
		l.HTB = &h
		return nil
	})
}

// DelHTB implements plan.Tc.
func (k *Kernel) DelHTB(name string) error {
	return k.link(name, func(l *plan.Link) error {
		if l.HTB == nil {
			return fmt.Errorf("deleting qdisc %x: of link %q: no such file or directory", plan.TcHandle, name)
		}
		l.HTB = nil
		return nil
	})
}

// dumpHTB writes what Dump shows of l's htb.
func dumpHTB(l plan.Link) string {
	if l.HTB == nil {
		return ""
	}
	s := " htb " + l.HTB.String()
	if l.HTB.Leaf != "" {
		s += " leaf " + l.HTB.Leaf
	}
	return s
}
