package nft

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/knftables"

	"github.com/kvmnet/kvmnet/internal/plan"
)

func TestNextGeneration(t *testing.T) {
	for gen, want := range map[uint32]uint32{1: 2, 41: 42, 0xffffffff: 1} {
		if got := nextGeneration(gen); got != want {
			t.Errorf("nextGeneration(%d) = %d, want %d", gen, got, want)
		}
	}
}

// TestCommitted: a kept reading follows kvmnet's own element edit only
// when that edit was the one transaction since the reading.
func TestCommitted(t *testing.T) {
	const fam = knftables.InetFamily
	kept := plan.TableState{Exists: true, Comment: "v1", Chains: map[string][]string{"c": {"r"}},
		Sets: plan.Elements{"a": {"1", "3"}, "b": {"x"}}}
	edit := &plan.NftChange{Add: plan.Elements{"a": {"2"}}, Del: plan.Elements{"a": {"3"}, "b": {"x"}}}
	for _, tt := range []struct {
		name          string
		before, after uint32
		ch            *plan.NftChange
		want          *plan.TableState // nil: forgotten
	}{
		{"the next generation", 5, 6, edit, &plan.TableState{Exists: true, Comment: "v1", Chains: kept.Chains,
			Sets: plan.Elements{"a": {"1", "2"}, "b": {}}}},
		{"another transaction landed too", 5, 7, edit, nil},
		{"the reading was already stale", 4, 5, edit, nil},
		{"a rebuild", 5, 6, &plan.NftChange{Rebuild: true}, nil},
		{"a set the reading lacks", 5, 6, &plan.NftChange{Add: plan.Elements{"z": {"1"}}}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := NewTables(-1)
			tb.last[fam] = reading{gen: 5, st: kept}
			other := plan.TableState{Exists: true}
			tb.last[knftables.BridgeFamily] = reading{gen: 5, st: other}
			tb.Committed(fam, tt.before, tt.after, tt.ch)
			// The other table was not in the transaction: its reading
			// holds when nothing else landed.
			if o, ok := tb.last[knftables.BridgeFamily]; tt.before == 5 && tt.after == 6 && (!ok || o.gen != 6) {
				t.Errorf("the other table's reading: %+v, %t; want it kept at generation 6", o, ok)
			} else if tt.after == 7 && ok && o.gen == 7 {
				t.Errorf("the other table's reading was carried to generation %d past another transaction", o.gen)
			}
			r, ok := tb.last[fam]
			switch {
			case tt.want == nil && ok:
				t.Errorf("kept %+v at %d, want it forgotten", r.st, r.gen)
			case tt.want != nil && !ok:
				t.Error("forgotten, want it kept")
			case tt.want != nil:
				if r.gen != tt.after {
					t.Errorf("kept at generation %d, want %d", r.gen, tt.after)
				}
				if d := cmp.Diff(*tt.want, r.st); d != "" {
					t.Errorf("kept reading (-want +got):\n%s", d)
				}
			}
			// The reading handed out before is never changed.
			if d := cmp.Diff(plan.Elements{"a": {"1", "3"}, "b": {"x"}}, kept.Sets); d != "" {
				t.Errorf("the old reading changed:\n%s", d)
			}
		})
	}
}
