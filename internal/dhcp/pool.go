package dhcp

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"time"
)

// poolIndex is the allocator's index of its range: one bit per address,
// set while the address cannot go to a new client (outside the pool,
// leased (expired or not), offered, declined). Finding a free address is
// then a look at a word or two instead of a walk of the range, with a
// look at every offer for every address on the way, which cost a DISCOVER
// time linear in the leases times the offers. A /16 range is 8 KB.
type poolIndex struct {
	start uint32 // the range's first address
	n     int    // addresses in the range
	bits  []uint64
	// low is the first word that may have a clear bit: no word below it
	// does.
	low int
}

func newPoolIndex(start, end netip.Addr) *poolIndex {
	s, e := u32(start), u32(end)
	p := &poolIndex{start: s, n: int(e-s) + 1}
	p.bits = make([]uint64, (p.n+63)/64)
	// The bits past the range's end are never free.
	if r := p.n % 64; r != 0 {
		p.bits[len(p.bits)-1] = ^uint64(0) << r
	}
	return p
}

func u32(ip netip.Addr) uint32 {
	b := ip.As4()
	return binary.BigEndian.Uint32(b[:])
}

// index returns the bit of ip, or false when ip is outside the range.
func (p *poolIndex) index(ip netip.Addr) (int, bool) {
	if !ip.Is4() {
		return 0, false
	}
	v := u32(ip)
	if v < p.start || int(v-p.start) >= p.n {
		return 0, false
	}
	return int(v - p.start), true
}

func (p *poolIndex) addr(i int) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], p.start+uint32(i))
	return netip.AddrFrom4(b)
}

// set marks ip busy or free; addresses outside the range are ignored.
func (p *poolIndex) set(ip netip.Addr, busy bool) {
	i, ok := p.index(ip)
	if !ok {
		return
	}
	w, bit := i/64, uint64(1)<<(i%64)
	if busy {
		p.bits[w] |= bit
		return
	}
	p.bits[w] &^= bit
	p.low = min(p.low, w)
}

// first returns the lowest free address of the range, if any.
func (p *poolIndex) first() (netip.Addr, bool) {
	for ; p.low < len(p.bits); p.low++ {
		if x := ^p.bits[p.low]; x != 0 {
			return p.addr(p.low*64 + bits.TrailingZeros64(x)), true
		}
	}
	return netip.Addr{}, false
}

// expiry is the end of an offer or of a declined address's hold.
type expiry struct {
	mac   string // "" for a declined address
	ip    netip.Addr
	until time.Time
}

// expiries is a min-heap of expiry by until. Offers and declines are
// mostly made in the order they end (each is held a fixed time), but not
// always: an offer put back after a failed write ends before the ones made
// since.
type expiries []expiry

func (e *expiries) push(x expiry) {
	*e = append(*e, x)
	h := *e
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h[i].until.Before(h[p].until) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

// pop returns the entry that ends first if it has ended at now.
func (e *expiries) pop(now time.Time) (expiry, bool) {
	h := *e
	if len(h) == 0 || now.Before(h[0].until) {
		return expiry{}, false
	}
	x := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h[last] = expiry{}
	h = h[:last]
	for i := 0; ; {
		c := 2*i + 1
		if c >= len(h) {
			break
		}
		if c+1 < len(h) && h[c+1].until.Before(h[c].until) {
			c++
		}
		if !h[c].until.Before(h[i].until) {
			break
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
	*e = h
	return x, true
}
