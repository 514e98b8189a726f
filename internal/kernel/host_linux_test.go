package kernel

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/knftables"

	"github.com/kvmnet/kvmnet/internal/apply"
	"github.com/kvmnet/kvmnet/internal/kernel/nft"
	"github.com/kvmnet/kvmnet/internal/model"

	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// TestHostRefusesOtherThreads: a Host opened in a test namespace, used from
// a goroutine that is not in it, must refuse everything that acts in the
// calling thread's namespace (nft, sysctl, taps) instead of changing the
// machine's own network.
func TestHostRefusesOtherThreads(t *testing.T) {
	ns := nstest.New(t)
	var h *Host
	nstest.Do(t, ns, func() {
		var err error
		if h, err = Open(); err != nil {
			t.Error(err)
		}
	})
	if h == nil {
		t.FailNow()
	}
	defer h.Close()
	// This goroutine is in the machine's namespace.
	for what, err := range map[string]error{
		"sysctl": h.SetSysctl(plan.SysctlIPForward, "1"),
		"tap":    h.AddTap("kvt-never", plan.TapSpec{}, ""),
		"nft":    h.NftRestore(t.Context(), knftables.InetFamily, ""),
	} {
		if err == nil || !strings.Contains(err.Error(), "not in the network namespace") {
			t.Errorf("%s from another namespace: %v, want a refusal", what, err)
		}
	}
	if _, err := h.Observe(t.Context(), plan.ObserveOptions{Hosts: true}); err == nil {
		t.Error("observe from another namespace worked")
	}
}

// uplinkHost enters a new namespace with an uplink eth0 (172.30.0.2/24)
// and opens the Host there; the test's goroutine stays in it.
func uplinkHost(t *testing.T) (string, *Host) {
	ns := nstest.New(t)
	nstest.Run(t, ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
	nstest.Run(t, ns, "ip", "link", "set", "eth0", "up")
	nstest.Run(t, ns, "ip", "addr", "add", "172.30.0.2/24", "dev", "eth0")
	nstest.Enter(t, ns)
	h, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return ns, h
}

// applyDoc observes h, plans doc against it and applies the plan; it
// returns doc parsed.
func applyDoc(t *testing.T, h *Host, doc string) *model.Config {
	t.Helper()
	cfg, err := model.Parse("t.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	obs, err := h.Observe(t.Context(), plan.ObserveOptions{Hosts: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(cfg, obs, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := apply.Apply(t.Context(), h, p, apply.Hooks{}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestObserveNetlinkMatchesJSON applies a config with every kind of set
// element (forwards with ranges, from lists and rate limits; two networks)
// and checks that reading the table over netlink gives exactly what nft's
// own JSON gives.
func TestObserveNetlinkMatchesJSON(t *testing.T) {
	_, h := uplinkHost(t)
	cfg := applyDoc(t, h, `
networks:
  - name: dev
    mode: nat
    subnet: 192.168.100.0/24
    egress: eth0
    forwards:
      - {port: 8080, to: "192.168.100.10:80"}
      - {proto: udp, port: 5000-5002, to: "192.168.100.10", from: [203.0.113.0/24, 198.51.100.7/32, 10.0.0.0/8]}
      - {port: 2222, to: "192.168.100.10:22", rateLimit: 50/second}
  - {name: test, mode: nat, subnet: 10.20.0.0/16, egress: eth0}
`)
	got, err := nft.ObserveNetlink(int(h.ns))
	if err != nil {
		t.Fatal(err)
	}
	want, err := h.NFT.Observe(t.Context()) // through `nft -j`
	if err != nil {
		t.Fatal(err)
	}
	sortSets := func(s plan.TableState) plan.TableState {
		for k, v := range s.Sets {
			slices.Sort(v)
			s.Sets[k] = v
		}
		return s
	}
	// The JSON path lists dynamic sets' meters; netlink reports only their
	// names (the planner ignores their contents).
	for name := range want.Sets {
		if strings.HasSuffix(name, "_meter") {
			want.Sets[name] = []plan.Element{}
		}
	}
	if d := cmp.Diff(sortSets(want), sortSets(got)); d != "" {
		t.Errorf("netlink observation differs from nft -j (-json +netlink):\n%s", d)
	}
	if len(got.Sets[plan.MapDNAT]) != 5 || len(got.Sets[plan.SetFwdFrom]) != 9 {
		t.Errorf("unexpected element counts: %v", got.Sets)
	}
	// Applying again is a no-op: the observation round-trips.
	obs, err := h.Observe(t.Context(), plan.ObserveOptions{Hosts: true})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := plan.Build(cfg, obs, plan.Options{}); err != nil || !p.Empty() {
		t.Errorf("second plan: %v\n%s", err, p)
	}
}

// TestObserveKeepsReadings: the tables are read from the kernel only when
// the ruleset generation moved; kvmnet's own element edit carries the
// kept reading forward, and any other change, even to one element of
// kvmnet's table, is read again.
func TestObserveKeepsReadings(t *testing.T) {
	ns, h := uplinkHost(t)
	const file = `
networks:
  - name: dev
    mode: nat
    subnet: 192.168.100.0/24
    egress: eth0
    forwards:
      - {port: 8080, to: "192.168.100.10:80"}
`
	// observe returns the inet table as Observe sees it, checked against
	// a fresh reading, and how many tables Observe read from the kernel.
	observe := func() (plan.TableState, int) {
		t.Helper()
		before := h.TableReads()
		obs, err := h.Observe(t.Context(), plan.ObserveOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := nft.ObserveNetlink(int(h.ns))
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(fresh, obs.Table); d != "" {
			t.Errorf("Observe differs from a fresh reading (-fresh +observed):\n%s", d)
		}
		return obs.Table, h.TableReads() - before
	}
	applyDoc(t, h, file)
	if _, n := observe(); n != 2 {
		t.Errorf("after the table was made: %d tables read, want 2 (inet and bridge)", n)
	}
	if _, n := observe(); n != 0 {
		t.Errorf("nothing changed: %d tables read, want 0", n)
	}
	// kvmnet's own element edit: the reading follows it.
	applyDoc(t, h, file+`      - {port: 8081, to: "192.168.100.11:80"}`+"\n")
	st, n := observe()
	if n != 0 {
		t.Errorf("after an element edit: %d tables read, want 0", n)
	}
	if len(st.Sets[plan.MapDNAT]) != 2 {
		t.Errorf("dnat4 after adding a forward: %v", st.Sets[plan.MapDNAT])
	}
	// Someone else's transaction, in another table: both are read again.
	nstest.Run(t, ns, "nft", "add", "table", "inet", "other")
	if _, n := observe(); n != 2 {
		t.Errorf("after another table was made: %d tables read, want 2", n)
	}
	// Someone else deletes one element of kvmnet's map: seen.
	nstest.Run(t, ns, "nft", "delete", "element", "inet", plan.TableName, plan.MapDNAT, "{ 172.30.0.2 . tcp . 8081 }")
	st, n = observe()
	if n != 2 {
		t.Errorf("after an element was deleted by hand: %d tables read, want 1", n)
	}
	if len(st.Sets[plan.MapDNAT]) != 1 {
		t.Errorf("dnat4 after its element was deleted by hand: %v", st.Sets[plan.MapDNAT])
	}
}
