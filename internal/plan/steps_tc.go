package plan

import (
	"context"
	"fmt"
)

// The steps of traffic control (tc): kvmnet's htb on a link.

// TcHandle is the major handle of kvmnet's root qdisc ("6b76:", "kv"),
// and TcLeafHandle that of the leaf qdisc under its class. libvirt puts
// its own htb at 1:, so a qdisc at 6b76: is kvmnet's and no other is
// ever deleted.
const (
	TcHandle     = 0x6b76
	TcLeafHandle = 0x6b77
	// TcClassMinor is the minor of the one class, also the htb default.
	TcClassMinor = 1
)

// HTB is kvmnet's shaping of a link's egress: a root htb qdisc at
// TcHandle whose one class (the default) has Rate and Ceil, in bits per
// second, and Burst, in bytes (the same for ceil), with Leaf as its
// qdisc: "fq_codel", or "" for the kernel's default (pfifo).
type HTB struct {
	Rate, Ceil, Burst uint64
	Leaf              string
}

// Same reports whether h and o shape alike. The kernel keeps a burst as
// the time it takes at the rate (in ticks), so a burst read back may
// differ from the one set by a rounding; within 1% counts as the same.
func (h HTB) Same(o HTB) bool {
	d := max(h.Burst, o.Burst) - min(h.Burst, o.Burst)
	return h.Rate == o.Rate && h.Ceil == o.Ceil && h.Leaf == o.Leaf && d <= h.Burst/100+8
}

// FormatRate writes bits per second as tc does (50mbit, 1500kbit).
func FormatRate(bits uint64) string {
	for _, u := range []struct {
		n    uint64
		name string
	}{{1e12, "tbit"}, {1e9, "gbit"}, {1e6, "mbit"}, {1e3, "kbit"}} {
		if bits >= u.n && bits%u.n == 0 {
			return fmt.Sprintf("%d%s", bits/u.n, u.name)
		}
	}
	return fmt.Sprintf("%dbit", bits)
}

// String is the class's shaping as tc writes it.
func (h HTB) String() string {
	return fmt.Sprintf("rate %s ceil %s burst %db cburst %db", FormatRate(h.Rate), FormatRate(h.Ceil), h.Burst, h.Burst)
}

// SetHTB shapes a link's egress with h, from Prev (nil: the link had no
// htb of kvmnet's, and undoing deletes it).
type SetHTB struct {
	Name string
	HTB  HTB
	Prev *HTB
}

func (s SetHTB) Op() Op       { return OpSetHTB }
func (s SetHTB) Link() string { return s.Name }

func (s SetHTB) String() string {
	c := fmt.Sprintf("tc qdisc replace dev %s root handle %x: htb default %d", s.Name, TcHandle, TcClassMinor) +
		fmt.Sprintf(" && tc class replace dev %s parent %x: classid %x:%d htb %s", s.Name, TcHandle, TcHandle, TcClassMinor, s.HTB)
	if s.HTB.Leaf != "" {
		c += fmt.Sprintf(" && tc qdisc replace dev %s parent %x:%d handle %x: %s", s.Name, TcHandle, TcClassMinor, TcLeafHandle, s.HTB.Leaf)
	}
	return c
}

func (s SetHTB) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	undo := func() error { return k.DelHTB(s.Name) }
	if s.Prev != nil {
		prev := *s.Prev
		undo = func() error { return k.SetHTB(s.Name, prev) }
	}
	return undo, k.SetHTB(s.Name, s.HTB)
}

// DelHTB takes kvmnet's htb off a link; the kernel puts its default
// qdisc back.
type DelHTB struct {
	Name string
	Prev HTB
}

func (s DelHTB) Op() Op       { return OpDelHTB }
func (s DelHTB) Link() string { return s.Name }
func (s DelHTB) String() string {
	return fmt.Sprintf("tc qdisc del dev %s root handle %x:", s.Name, TcHandle)
}

func (s DelHTB) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	return func() error { return k.SetHTB(s.Name, s.Prev) }, k.DelHTB(s.Name)
}
