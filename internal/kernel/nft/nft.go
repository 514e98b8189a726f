// Package nft is kvmnet's backend over nftables: it reads the kvmnet table
// back from the kernel and runs changes as single `nft -f` transactions
// through knftables. It only ever touches table inet kvmnet.
package nft

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"

	"sigs.k8s.io/knftables"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// NFT drives the nft binary for kvmnet's two tables: inet kvmnet and
// bridge kvmnet.
type NFT struct {
	kn   map[knftables.Family]*lazyInterface
	path string
}

// lazyInterface is the knftables interface of one table, made on first
// use: knftables.New runs `nft --version` and `nft --check`, and the check
// reads the whole table (30 ms with 10,000 forwards). Commands that change
// one table, or none (kvmnet forward add, get, history), pay for what they
// use only.
type lazyInterface struct {
	fam  knftables.Family
	once sync.Once
	kn   knftables.Interface
	err  error
}

func (l *lazyInterface) get() (knftables.Interface, error) {
	l.once.Do(func() {
		// knftables rejects versions older than 1.0.1 and names the one
		// it found.
		if l.kn, l.err = knftables.New(l.fam, plan.TableName); l.err != nil {
			l.err = fmt.Errorf("nftables: %w", l.err)
		}
	})
	return l.kn, l.err
}

// New checks that the nft binary is installed. Whether it is usable
// (version, permissions) is checked when a table is first changed.
func New() (*NFT, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("nftables: the nft command is not installed (install it with `apt-get install nftables`): %w", err)
	}
	n := &NFT{kn: map[knftables.Family]*lazyInterface{}, path: path}
	for _, fam := range []knftables.Family{knftables.InetFamily, knftables.BridgeFamily} {
		n.kn[fam] = &lazyInterface{fam: fam}
	}
	return n, nil
}

// Prepare readies the driver of both tables now, so that the first change
// does not wait for it; a failure is reported again by that change.
func (n *NFT) Prepare() {
	for _, l := range n.kn {
		l.get()
	}
}

// run executes nft with args and optional stdin, with LC_ALL=C because
// callers match its error text.
func (n *NFT) run(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, n.path, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func isNoTable(err error) bool {
	return err != nil && strings.Contains(err.Error(), "No such file or directory")
}

// ListJSON returns `nft -j list table inet kvmnet` ("" when the table does
// not exist), for counters.
func (n *NFT) ListJSON(ctx context.Context) (string, error) {
	out, err := n.run(ctx, "", "-j", "list", "table", "inet", plan.TableName)
	if isNoTable(err) {
		return "", nil
	}
	return out, err
}

// Observe reads table inet kvmnet: its comment, the rule comments of every
// chain and the elements of every set, with one `nft -j list table`.
func (n *NFT) Observe(ctx context.Context) (plan.TableState, error) {
	out, err := n.ListJSON(ctx)
	if err != nil {
		return plan.TableState{}, fmt.Errorf("reading nftables table inet %s: %w", plan.TableName, err)
	}
	if out == "" {
		return plan.TableState{}, nil
	}
	return ParseTable([]byte(out))
}

// ParseTable parses the JSON of `nft -j list table inet kvmnet`.
func ParseTable(data []byte) (plan.TableState, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return plan.TableState{}, fmt.Errorf("parsing nft JSON: %w", err)
	}
	st := plan.TableState{Chains: map[string][]string{}, Sets: plan.Elements{}}
	for _, obj := range doc.Nftables {
		for kind, raw := range obj {
			switch kind {
			case "table":
				st.Exists = true
			case "chain":
				var c struct{ Name string }
				if err := json.Unmarshal(raw, &c); err != nil {
					return st, fmt.Errorf("parsing nft chain: %w", err)
				}
				if v, ok := plan.VersionFromChain(c.Name); ok {
					st.Comment = v
					continue
				}
				if _, ok := st.Chains[c.Name]; !ok {
					st.Chains[c.Name] = []string{}
				}
			case "flowtable":
				ft, err := parseFlowtable(raw)
				if err != nil {
					return st, err
				}
				if st.Flowtables == nil {
					st.Flowtables = map[string]plan.Flowtable{}
				}
				st.Flowtables[ft.Name] = ft
			case "rule":
				var r struct{ Chain, Comment string }
				if err := json.Unmarshal(raw, &r); err != nil {
					return st, fmt.Errorf("parsing nft rule: %w", err)
				}
				st.Chains[r.Chain] = append(st.Chains[r.Chain], r.Comment)
			case "set", "map":
				var s struct {
					Name string
					Elem []json.RawMessage
				}
				if err := json.Unmarshal(raw, &s); err != nil {
					return st, fmt.Errorf("parsing nft set: %w", err)
				}
				elems := []plan.Element{}
				for _, e := range s.Elem {
					v, err := elemString(e)
					if err != nil {
						return st, fmt.Errorf("parsing element of set %s: %w", s.Name, err)
					}
					elems = append(elems, v)
				}
				st.Sets[s.Name] = elems
			}
		}
	}
	return st, nil
}

// parseFlowtable reads a flowtable of `nft -j list table`: its devices
// ("dev") are a list, or a string when there is one.
func parseFlowtable(raw json.RawMessage) (plan.Flowtable, error) {
	var f struct {
		Name string
		Dev  json.RawMessage
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return plan.Flowtable{}, fmt.Errorf("parsing nft flowtable: %w", err)
	}
	ft := plan.Flowtable{Name: f.Name}
	if len(f.Dev) > 0 && json.Unmarshal(f.Dev, &ft.Devices) != nil {
		var one string
		if err := json.Unmarshal(f.Dev, &one); err != nil {
			return ft, fmt.Errorf("parsing devices of nft flowtable %s: %w", f.Name, err)
		}
		ft.Devices = []string{one}
	}
	slices.Sort(ft.Devices)
	return ft, nil
}

// elemString normalises one JSON element to the planner's form: strings
// bare, prefixes a.b.c.d/n, ranges a-b, concatenations as their fields.
func elemString(raw json.RawMessage) (plan.Element, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	if t, ok := v.([]any); ok {
		// A map element: [key, value].
		if len(t) != 2 {
			return "", fmt.Errorf("unexpected map element %v", t)
		}
		k, err := valueFields(t[0])
		if err != nil {
			return "", err
		}
		val, err := valueFields(t[1])
		if err != nil {
			return "", err
		}
		return plan.NewMapElement(k, val...), nil
	}
	f, err := valueFields(v)
	return plan.NewElement(f...), err
}

// valueFields reads a key or a value: the fields of a concatenation, or
// one field.
func valueFields(v any) ([]string, error) {
	if t, ok := v.(map[string]any); ok {
		if c, ok := t["concat"].([]any); ok {
			parts := make([]string, len(c))
			for i, p := range c {
				s, err := valueString(p)
				if err != nil {
					return nil, err
				}
				parts[i] = s
			}
			return parts, nil
		}
	}
	s, err := valueString(v)
	return []string{s}, err
}

// valueString reads one field.
func valueString(v any) (string, error) {
	switch t := v.(type) {
	case string:
		return t, nil
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), nil
	case map[string]any:
		if p, ok := t["prefix"].(map[string]any); ok {
			addr, _ := p["addr"].(string)
			l, _ := p["len"].(float64)
			return fmt.Sprintf("%s/%d", addr, int(l)), nil
		}
		if r, ok := t["range"].([]any); ok && len(r) == 2 {
			a, err := valueString(r[0])
			if err != nil {
				return "", err
			}
			b, err := valueString(r[1])
			if err != nil {
				return "", err
			}
			return a + "-" + b, nil
		}
		if e, ok := t["elem"].(map[string]any); ok {
			return valueString(e["val"])
		}
		return "", fmt.Errorf("unexpected element %v", t)
	}
	return "", fmt.Errorf("unexpected element %v", v)
}

// Apply runs the change as one transaction on the table of its family.
func (n *NFT) Apply(ctx context.Context, ch *plan.NftChange) error {
	fam := ch.Ruleset.Family
	lazy, ok := n.kn[fam]
	if !ok {
		return fmt.Errorf("updating nftables: no table of family %q", fam)
	}
	kn, err := lazy.get()
	if err != nil {
		return err
	}
	tx := kn.NewTransaction()
	ch.Transaction(tx)
	if err := kn.Run(ctx, tx); err != nil {
		return fmt.Errorf("updating nftables table %s %s: %w", fam, plan.TableName, err)
	}
	return nil
}

// Snapshot returns the table of family as nft text ("" when it does not
// exist), for Restore to put back if a later step of an apply fails.
func (n *NFT) Snapshot(ctx context.Context, fam knftables.Family) (string, error) {
	out, err := n.run(ctx, "", "list", "table", string(fam), plan.TableName)
	if isNoTable(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("saving nftables table %s %s: %w", fam, plan.TableName, err)
	}
	return out, nil
}

// Restore replaces the table of family with a Snapshot, atomically: the
// leading `add table` makes the `delete table` safe when it does not exist.
func (n *NFT) Restore(ctx context.Context, fam knftables.Family, snapshot string) error {
	script := fmt.Sprintf("add table %s %s\ndelete table %s %s\n%s", fam, plan.TableName, fam, plan.TableName, snapshot)
	if _, err := n.run(ctx, script, "-f", "-"); err != nil {
		return fmt.Errorf("restoring nftables table %s %s: %w", fam, plan.TableName, err)
	}
	return nil
}

// RuleCounters returns the packet counters of table inet kvmnet's rules
// that have a comment and a counter, by "chain/comment"; nothing when the
// table does not exist.
func (n *NFT) RuleCounters(ctx context.Context) (map[string]uint64, error) {
	out, err := n.ListJSON(ctx)
	if err != nil || out == "" {
		return map[string]uint64{}, err
	}
	return parseRuleCounters([]byte(out))
}

func parseRuleCounters(data []byte) (map[string]uint64, error) {
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Chain   string                       `json:"chain"`
				Comment string                       `json:"comment"`
				Expr    []map[string]json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("reading rule counters: %w", err)
	}
	counters := map[string]uint64{}
	for _, o := range doc.Nftables {
		r := o.Rule
		if r == nil || r.Comment == "" {
			continue
		}
		for _, e := range r.Expr {
			var c struct{ Packets uint64 }
			if raw, ok := e["counter"]; ok && json.Unmarshal(raw, &c) == nil {
				counters[r.Chain+"/"+r.Comment] += c.Packets
			}
		}
	}
	return counters, nil
}
