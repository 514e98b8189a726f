package nft

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// Reading a table with 10,000 forwards over netlink takes 30-40 ms, most
// of an edit that changes one element. The kernel numbers the states of a
// namespace's ruleset: every committed transaction, of any table and by
// anyone (nft, iptables-nft, firewalld, kvmnet), moves the generation on by
// one (nf_tables_commit), and NFT_MSG_GETGEN returns it in one small
// message. Two readings at one generation therefore see the same chains,
// rules and elements, and Tables keeps the last reading of each table with
// the generation it was read at. Only what the kernel changes without a
// transaction escapes the count (elements the rules add to dynamic sets,
// counters): those are never part of a reading.

// Generation returns the ruleset generation of the namespace nsFD refers
// to.
func Generation(nsFD int) (uint32, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: nsFD})
	if err != nil {
		return 0, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	defer c.Close()
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		// struct nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id 0.
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("reading the nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("reading the nftables generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
		if err := ad.Err(); err != nil {
			return 0, fmt.Errorf("reading the nftables generation: %w", err)
		}
	}
	return 0, fmt.Errorf("reading the nftables generation: the kernel's answer has no NFTA_GEN_ID")
}

// nextGeneration is the generation after gen: the kernel skips 0 when the
// counter wraps.
func nextGeneration(gen uint32) uint32 {
	if gen+1 == 0 {
		return 1
	}
	return gen + 1
}

// Tables reads kvmnet's tables of one namespace and keeps the last reading
// of each with the generation it was read at. A kept reading is only ever
// replaced, never changed, so callers may hold on to what Read returns
// but must not change it.
type Tables struct {
	ns int

	mu   sync.Mutex
	last map[knftables.Family]reading
	// reads counts the tables actually read from the kernel, for tests.
	reads int
}

type reading struct {
	gen uint32
	st  plan.TableState
}

// NewTables reads the tables of the namespace nsFD refers to; the caller
// keeps nsFD open while Tables is used.
func NewTables(nsFD int) *Tables {
	return &Tables{ns: nsFD, last: map[knftables.Family]reading{}}
}

// Read returns kvmnet's tables of families fams as they are now, in that
// order: each the kept reading when the generation has not moved since it
// was read, else a new reading, kept when the generation did not move
// while it was read.
func (t *Tables) Read(fams ...knftables.Family) ([]plan.TableState, error) {
	gen, err := Generation(t.ns)
	if err != nil {
		return nil, err
	}
	out := make([]plan.TableState, len(fams))
	var read []int
	t.mu.Lock()
	for i, fam := range fams {
		if r, ok := t.last[fam]; ok && r.gen == gen {
			out[i] = r.st
		} else {
			read = append(read, i)
		}
	}
	t.mu.Unlock()
	for i := range out {
		if !slices.Contains(read, i) {
			if out[i], err = refreshFlowtables(t.ns, out[i]); err != nil {
				return nil, err
			}
		}
	}
	if len(read) == 0 {
		return out, nil
	}
	for _, i := range read {
		if out[i], err = ObserveFamily(t.ns, fams[i]); err != nil {
			return nil, err
		}
	}
	after, err := Generation(t.ns)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reads += len(read)
	for _, i := range read {
		if err == nil && after == gen {
			t.last[fams[i]] = reading{gen: gen, st: out[i]}
		} else {
			// A transaction landed while the tables were read: a
			// reading may mix two states. It is still what the caller
			// asked for (as any reading races with the next change),
			// but it is not kept.
			delete(t.last, fams[i])
		}
	}
	return out, nil
}

// Reads is the number of times a table was read from the kernel rather
// than taken from a kept reading.
func (t *Tables) Reads() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reads
}

// Committed tells t that the transaction ch on fam's table succeeded, with
// the generation read just before it was sent (before) and just after it
// returned (after). When after is the very next generation, no other
// transaction landed in between: the readings of other tables kept at
// before still hold, and when ch only added and deleted elements, fam's
// table is its reading plus ch. In any other case the next Read reads
// again, since the generation has moved.
func (t *Tables) Committed(fam knftables.Family, before, after uint32, ch *plan.NftChange) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if after != nextGeneration(before) {
		delete(t.last, fam)
		return
	}
	for f, r := range t.last {
		if f != fam && r.gen == before {
			t.last[f] = reading{gen: after, st: r.st}
		}
	}
	r, ok := t.last[fam]
	if !ok || r.gen != before || ch.Rebuild || ch.Delete {
		delete(t.last, fam)
		return
	}
	sets := make(plan.Elements, len(r.st.Sets))
	for name, elems := range r.st.Sets {
		sets[name] = elems
	}
	for name := range unionKeys(ch.Add, ch.Del) {
		have, ok := sets[name]
		if !ok {
			// The change names a set the reading does not have: the
			// transaction would have failed. Read again to be sure.
			delete(t.last, fam)
			return
		}
		sets[name] = edited(have, ch.Add[name], ch.Del[name])
	}
	st := r.st
	st.Sets = sets
	t.last[fam] = reading{gen: after, st: st}
}

func unionKeys(a, b plan.Elements) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// edited returns a new slice: have without del, then add. When have is
// sorted and add is sorted (the planner's order), so is the result.
func edited[E ~string](have, add, del []E) []E {
	gone := make(map[E]bool, len(del))
	for _, e := range del {
		gone[e] = true
	}
	out := make([]E, 0, len(have)+len(add))
	for _, e := range have {
		if !gone[e] {
			out = append(out, e)
		}
	}
	if len(add) == 0 {
		return out
	}
	out = append(out, add...)
	if slices.IsSorted(have) && slices.IsSorted(add) {
		slices.Sort(out)
	}
	return out
}
