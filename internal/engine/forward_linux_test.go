package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kvmnet/kvmnet/internal/kernel"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

var cmpConfig = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

// forwardsDoc is a host with n forwards into network dev.
func forwardsDoc(n int) string {
	var b strings.Builder
	b.WriteString("networks:\n  - name: dev\n    mode: nat\n    subnet: 192.168.100.0/24\n    egress: eth0\n    forwards:\n")
	for i := range n {
		fmt.Fprintf(&b, "      - {port: %d, to: \"web1:80\"}\n", 20000+i)
	}
	b.WriteString("vms:\n  - name: web1\n    interfaces:\n      - {network: dev, mac: \"52:54:00:00:00:10\", ip: 192.168.100.10}\n")
	return b.String()
}

var cliEdit = model.Edit{Name: "kvmnet forward add", Args: map[string]string{"port": "--port", "to": "--to", "network": "--network"}}

// noFlows fails cutting connections, the step after the nftables change
// of a removal, so that the change must be undone.
type noFlows struct{ *kernel.Host }

func (noFlows) DeleteFlows([]plan.Flow) (int, error) { return 0, errors.New("injected failure") }

// TestForwardEdits adds and removes forwards among a few hundred on a real
// kernel: only map elements change, the stored state follows, refused
// edits and failed applies change nothing.
func TestForwardEdits(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft is not installed")
	}
	ns := egressNS(t)
	// Not as subtests from here: those run on other goroutines, outside
	// the namespace.
	e, host := realEngine(t, ns)
	st, log := e.Store, e.Log
	ctx := context.Background()

	doc := forwardsDoc(300)
	cfg, err := model.Parse("host.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, cfg, []byte(doc), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	e.Keep(cfg, []byte(doc))

	// rules is the table without set contents, rule handles included.
	rules := func() string {
		out := nstest.Run(t, ns, "nft", "-a", "list", "table", "inet", "kvmnet")
		out = regexp.MustCompile(`(?s)elements = \{.*?\}`).ReplaceAllString(out, "")
		return regexp.MustCompile(`counter packets \d+ bytes \d+`).ReplaceAllString(out, "counter")
	}
	dnat := func() string { return nstest.Run(t, ns, "nft", "list", "map", "inet", "kvmnet", "dnat4") }
	revs := func() int {
		r, err := st.Revisions()
		if err != nil {
			t.Fatal(err)
		}
		return len(r)
	}
	// stored checks that the stored document says what the engine holds.
	stored := func(want *model.Config) {
		t.Helper()
		file, doc, err := e.DesiredDoc()
		if err != nil {
			t.Fatal(err)
		}
		got, err := model.Parse(file, doc)
		if err != nil {
			t.Fatalf("the stored document does not parse: %v", err)
		}
		if diff := cmp.Diff(want, got, cmpConfig); diff != "" {
			t.Errorf("stored document (-engine +stored):\n%s", diff)
		}
	}
	ruleset := rules()

	p, next, err := e.AddForward(ctx, "dev", model.Forward{Port: "40000", To: "web1:80"}, cliEdit)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Summary(); got != "1 nft" {
		t.Errorf("adding a forward did %s, want 1 nft", got)
	}
	if !strings.Contains(dnat(), "172.30.0.2 . tcp . 40000 : 192.168.100.10 . 80") {
		t.Errorf("dnat4 lacks the new forward:\n%s", dnat())
	}
	if got := rules(); got != ruleset {
		t.Errorf("adding a forward changed the rules (-before +after):\n%s", cmp.Diff(ruleset, got))
	}
	stored(next)
	if got, _, _ := e.Desired(); got != next {
		t.Errorf("Desired parsed the new revision again instead of using the edited config")
	}

	// A new process (the CLI) finds the parsed form in the store.
	fresh := &Engine{Store: st, Kernel: host, Log: log}
	if programStamp() == "" {
		t.Error("no build ID: the parsed form cannot be kept")
	} else if got, _, err := fresh.desiredForEdit(); err != nil {
		t.Fatal(err)
	} else if diff := cmp.Diff(next, got, cmpConfig); diff != "" {
		t.Errorf("kept parsed form (-edited +kept):\n%s", diff)
	}

	// Refused edits change neither the kernel nor the stored state.
	before, n := dnat(), revs()
	for _, tt := range []struct {
		f    model.Forward
		want string
	}{
		{model.Forward{Port: "40000", To: "web1:81"}, `kvmnet forward add: --port: tcp port "40000" on every address is already forwarded by networks[0].forwards[300] (line `},
		{model.Forward{Port: "40001", To: "web9:80"}, `kvmnet forward add: --to: "web9:80": VM "web9" does not exist (VMs: web1)`},
		{model.Forward{Port: "0", To: "web1"}, `kvmnet forward add: --port: "0": port 0 is out of range (want 1 to 65535)`},
	} {
		if _, _, err := e.AddForward(ctx, "dev", tt.f, cliEdit); err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("adding %+v: got %v, want %s...", tt.f, err, tt.want)
		}
	}
	// The planner's check of the new forward names its argument too.
	l, err := net.Listen("tcp", "0.0.0.0:8500")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const inUse = "kvmnet forward add: --port: port 8500/tcp is in use on the host: "
	if _, _, err := e.AddForward(ctx, "dev", model.Forward{Port: "8500", To: "web1"}, cliEdit); err == nil || !strings.HasPrefix(err.Error(), inUse) {
		t.Errorf("a port the host listens on: got %v, want %s...", err, inUse)
	}
	if got := dnat(); got != before || revs() != n {
		t.Errorf("refused edits changed something: %d revisions, want %d; dnat4 (-before +after):\n%s", revs(), n, cmp.Diff(before, got))
	}
	if _, _, err := e.AddForward(ctx, "dev", model.Forward{Port: "8500", To: "web1", Force: true}, cliEdit); err != nil {
		t.Fatal(err)
	}

	// A removal whose second step fails is undone: the forward is back.
	before, n = dnat(), revs()
	failing := &Engine{Store: st, Kernel: noFlows{host}, Log: log}
	if _, _, err := failing.RemoveForward(ctx, "dev", "8500", "", cliEdit); err == nil {
		t.Error("a removal whose connections could not be cut succeeded")
	}
	if got := dnat(); got != before || revs() != n {
		t.Errorf("a failed removal changed something: %d revisions, want %d; dnat4 (-before +after):\n%s", revs(), n, cmp.Diff(before, got))
	}

	for _, port := range []string{"8500", "40000", "20000"} {
		p, next, err := e.RemoveForward(ctx, "dev", port, "", cliEdit)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Summary(); got != "1 nft, 1 conntrack-delete" {
			t.Errorf("removing %s did %s, want 1 nft, 1 conntrack-delete", port, got)
		}
		if strings.Contains(dnat(), ". tcp . "+port+" :") {
			t.Errorf("dnat4 still has port %s", port)
		}
		stored(next)
	}
	if got := rules(); got != ruleset {
		t.Errorf("edits changed the rules (-before +after):\n%s", cmp.Diff(ruleset, got))
	}

	// A daemon's engine: once the tables were read, an edit reads none
	// from the kernel (the reading follows its own transaction), and the
	// parsed form is kept after the edit returns.
	bg := &Engine{Store: st, Kernel: host, Log: log, KeepInBackground: true}
	if _, _, err := bg.AddForward(ctx, "dev", model.Forward{Port: "40002", To: "web1:80"}, cliEdit); err != nil {
		t.Fatal(err)
	}
	reads := host.TableReads()
	if _, next, err = bg.AddForward(ctx, "dev", model.Forward{Port: "40003", To: "web1:80"}, cliEdit); err != nil {
		t.Fatal(err)
	}
	if got := host.TableReads(); got != reads {
		t.Errorf("an edit read %d tables from the kernel, want none", got-reads)
	}
	if !strings.Contains(dnat(), "172.30.0.2 . tcp . 40003 : 192.168.100.10 . 80") {
		t.Errorf("dnat4 lacks the forward added with a kept reading:\n%s", dnat())
	}
	stored(next)
	bg.Wait()
	if _, rev, err := st.Desired(); err != nil {
		t.Fatal(err)
	} else if blob, err := st.Parsed(rev, programStamp()); err != nil || (blob == nil && programStamp() != "") {
		t.Errorf("no parsed form kept for revision %d after Wait: %v", rev, err)
	}
}
