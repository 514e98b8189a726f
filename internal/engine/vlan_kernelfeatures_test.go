//go:build kernelfeatures

package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/apply"
	"github.com/kvmnet/kvmnet/internal/apply/applytest"
	"github.com/kvmnet/kvmnet/internal/kernel"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// The world of the VLAN tests: a host namespace whose uplink eth0
// (172.30.0.2/24) reaches a LAN namespace (lan0, 172.30.0.1/24 untagged,
// and the VLAN links lan0.10 10.10.0.254/24 and lan0.20 10.20.0.254/24 of
// a switch's trunk), and four guests, each a namespace whose eth0 is the
// peer of its "tap" in the host: g1 and g2 on VLAN 10, g3 on VLAN 20
// (with an address in VLAN 10's subnet too, so only the VLAN keeps it
// out), g4 a trunk of 10 and 20 with a VLAN link for each. The guests
// use static addresses, which spoofguard's IP source guard drops on a
// bridged network until DHCP snooping has seen a lease: it is off here,
// where VLANs are what is tested.
const vlanWorld = `
networks:
  - {name: lan, mode: bridged, bridge: br0, uplink: eth0, vlans: true}
vms:
  - {name: g1, interfaces: [{network: lan, mac: "52:54:00:00:10:01", tap: g1-0, vlan: 10, security: {spoofguard: false}}]}
  - {name: g2, interfaces: [{network: lan, mac: "52:54:00:00:10:02", tap: g2-0, vlan: 10, security: {spoofguard: false}}]}
  - {name: g3, interfaces: [{network: lan, mac: "52:54:00:00:20:03", tap: g3-0, vlan: 20, security: {spoofguard: false}}]}
  - {name: g4, interfaces: [{network: lan, mac: "52:54:00:00:00:04", tap: g4-0, vlan: {tagged: [10, 20]}, security: {spoofguard: false}}]}
`

type vlanGuests struct {
	host, lan string
	g         map[string]string // guest name → namespace
}

func newVLANWorld(t *testing.T) *vlanGuests {
	w := &vlanGuests{host: nstest.New(t), lan: nstest.New(t), g: map[string]string{}}
	run := func(ns string, args ...string) { nstest.Run(t, ns, args...) }
	run(w.host, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "lan0", "netns", w.lan)
	run(w.host, "ip", "link", "set", "eth0", "up")
	run(w.host, "ip", "addr", "add", "172.30.0.2/24", "dev", "eth0")
	// The LAN answers ARP only on the link that has the address: a VLAN
	// link must not answer for the untagged LAN's address, or a guest
	// would seem to reach it.
	run(w.lan, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")
	run(w.lan, "ip", "link", "set", "lan0", "up")
	run(w.lan, "ip", "addr", "add", "172.30.0.1/24", "dev", "lan0")
	for _, id := range []string{"10", "20"} {
		run(w.lan, "ip", "link", "add", "link", "lan0", "name", "lan0."+id, "type", "vlan", "id", id)
		run(w.lan, "ip", "link", "set", "lan0."+id, "up")
		run(w.lan, "ip", "addr", "add", "10."+id+".0.254/24", "dev", "lan0."+id)
	}
	addrs := map[string][]string{
		"g1": {"10.10.0.1/24", "172.30.0.51/24"},
		"g2": {"10.10.0.2/24"},
		"g3": {"10.10.0.3/24", "10.20.0.3/24"},
	}
	for i, name := range []string{"g1", "g2", "g3", "g4"} {
		ns := nstest.New(t)
		w.g[name] = ns
		run(w.host, "ip", "link", "add", name+"-0", "type", "veth", "peer", "name", "eth0", "netns", ns)
		run(w.host, "ip", "link", "set", name+"-0", "up")
		run(ns, "ip", "link", "set", "eth0", "address", fmt.Sprintf("52:54:00:00:%s:0%d", map[string]string{"g1": "10", "g2": "10", "g3": "20", "g4": "00"}[name], i+1))
		run(ns, "ip", "link", "set", "eth0", "up")
		for _, a := range addrs[name] {
			run(ns, "ip", "addr", "add", a, "dev", "eth0")
		}
	}
	g4 := w.g["g4"]
	for _, id := range []string{"10", "20"} {
		run(g4, "ip", "link", "add", "link", "eth0", "name", "eth0."+id, "type", "vlan", "id", id)
		run(g4, "ip", "link", "set", "eth0."+id, "up")
		run(g4, "ip", "addr", "add", "10."+id+".0.4/24", "dev", "eth0."+id)
	}
	return w
}

// pings reports whether ns reaches addr (three tries, one second each:
// under TCG the first ARP may take a while).
func pings(ns, addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return nstest.Command(ctx, ns, "ping", "-c", "1", "-w", "3", "-W", "1", addr).Run() == nil
}

// vlanSetup makes the world, enters the host namespace and applies
// vlanWorld through an engine on the real kernel.
func vlanSetup(t *testing.T) (*vlanGuests, *kernel.Host, *Engine) {
	w, host, e := vlanEngine(t)
	if err := applyVLANDoc(t, e, vlanWorld); err != nil {
		t.Fatal(err)
	}
	return w, host, e
}

// vlanEngine makes the world, enters the host namespace and returns an
// engine on its kernel that has applied nothing yet.
func vlanEngine(t *testing.T) (*vlanGuests, *kernel.Host, *Engine) {
	w := newVLANWorld(t)
	nstest.Enter(t, w.host)
	host, err := kernel.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(host.Close)
	return w, host, fakeEngine(t, host)
}

func applyVLANDoc(t *testing.T, e *Engine, doc string) error {
	t.Helper()
	cfg, err := model.Parse("host.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Apply(context.Background(), cfg, []byte(doc), ApplyOptions{AllowRemoval: true})
	return err
}

// TestVLANTraffic applies vlanWorld in Debian's kernel: guests on VLAN 10
// reach each other and VLAN 10 of the LAN, the guest on VLAN 20 reaches
// neither (though it has an address in their subnet) but VLAN 20 of the
// LAN, the trunk guest reaches both VLANs through its VLAN links; frames
// on the uplink carry their VLAN's tag (tcpdump -e on the LAN's side);
// no guest port is on the untagged LAN (the default PVID 1 did not leak),
// while the host's own address on the bridge still is. Then the daemon's
// Converge repairs a VLAN removed by hand.
func TestVLANTraffic(t *testing.T) {
	w, _, e := vlanSetup(t)
	t.Logf("bridge vlan show:\n%s", nstest.Run(t, w.host, "bridge", "vlan", "show"))
	for _, c := range []struct {
		from, to string
		want     bool
	}{
		{"g1", "10.10.0.2", true},   // same VLAN
		{"g1", "10.10.0.254", true}, // VLAN 10 of the LAN, tagged on the uplink
		{"g3", "10.10.0.1", false},  // VLAN 20 → VLAN 10: same subnet, other VLAN
		{"g3", "10.10.0.254", false},
		{"g3", "10.20.0.254", true},
		{"g4", "10.10.0.1", true},   // trunk, through eth0.10
		{"g4", "10.20.0.3", true},   // trunk, through eth0.20
		{"g1", "172.30.0.1", false}, // the untagged LAN: PVID 1 not on g1's port
	} {
		if got := pings(w.g[c.from], c.to); got != c.want {
			t.Errorf("%s → %s: reached %t, want %t", c.from, c.to, got, c.want)
		}
	}
	// The host's own address stays on the untagged LAN (VLAN 1).
	if !pings(w.lan, "172.30.0.2") {
		t.Error("the LAN no longer reaches the host's address on the bridge")
	}
	checkTag(t, w, "g1", "10.10.0.254", 10)
	checkTag(t, w, "g3", "10.20.0.254", 20)
	out := nstest.Run(t, w.host, "bridge", "vlan", "show", "dev", "g1-0")
	if strings.Contains(out, " 1 ") || strings.Contains(out, "\t1 ") || !strings.Contains(out, "10 PVID") {
		t.Errorf("g1-0 should carry VLAN 10 alone, as its PVID:\n%s", out)
	}

	// Repair: a VLAN removed by hand comes back with the next reconcile.
	nstest.Run(t, w.host, "bridge", "vlan", "del", "dev", "g2-0", "vid", "10")
	if pings(w.g["g1"], "10.10.0.2") {
		t.Fatal("g2 still reached after its VLAN was removed by hand")
	}
	p, err := e.Converge(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the reconcile repaired:\n%s", p)
	if !pings(w.g["g1"], "10.10.0.2") {
		t.Error("g2 is not reached again after the reconcile")
	}
}

// checkTag captures on the LAN side of the uplink while guest pings addr
// and expects the echo request tagged with vlan id.
func checkTag(t *testing.T, w *vlanGuests, guest, addr string, id int) {
	t.Helper()
	got := capture(t, w.lan, "lan0", "vlan and icmp", func() { pings(w.g[guest], addr) })
	t.Logf("on the uplink: %s", got)
	if want := fmt.Sprintf("vlan %d,", id); !strings.Contains(got, want) {
		t.Errorf("%s's echo request on the uplink does not carry %q:\n%s", guest, want, got)
	}
}

// capture runs tcpdump -e on iface in ns while do runs and returns what it
// printed: the frames matching filter that crossed iface meanwhile. do
// returns once its frames are sent (a ping that waited for its reply or
// gave up), and tcpdump in immediate mode has printed them by then.
func capture(t *testing.T, ns, iface, filter string, do func()) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := nstest.Command(ctx, ns, "tcpdump", "-i", iface, "-e", "-n", "-l", "--immediate-mode", filter)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// tcpdump says "listening on" once its socket is in place.
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !strings.Contains(sc.Text(), "listening on") {
	}
	go func() {
		for sc.Scan() {
		}
	}()
	do()
	// ip netns exec execs tcpdump: the signal reaches it.
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tcpdump: %v (%s)", err, stdout.String())
	}
	// Interrupted, tcpdump ends its output with an empty line.
	return strings.TrimSpace(stdout.String())
}

// TestVLANChangeRollsBack changes g1's VLAN (10 → 30) and turns g4 into a
// trunk with a native VLAN, failing each kernel call of the apply in
// turn: after each failure the ports' VLANs (bridge -j vlan show) and the
// links are exactly as before; then the change goes through.
func TestVLANChangeRollsBack(t *testing.T) {
	w, host, e := vlanSetup(t)
	to := strings.NewReplacer("tap: g1-0, vlan: 10, security: {spoofguard: false}}", "tap: g1-0, vlan: 30}",
		"vlan: {tagged: [10, 20]},", "vlan: {tagged: [10, 20], untagged: 40},").Replace(vlanWorld)
	state := func() string {
		// Normalized: the broadcast meters fill with the guests' own
		// traffic (IPv6 neighbour discovery) meanwhile.
		return nstest.Normalize(nstest.Run(t, w.host, "bridge", "-j", "vlan", "show") + nstest.SemanticDump(t, w.host))
	}
	before := state()
	for n := 1; ; n++ {
		e.Kernel = &injecting{Failing: &applytest.Failing{K: host, N: n}, reads: host}
		err := applyVLANDoc(t, e, to)
		if err == nil {
			t.Logf("failed each of %d kernel calls in turn; each rolled back", n-1)
			break
		}
		var ae *apply.Error
		if !errors.As(err, &ae) || !errors.Is(err, applytest.ErrInjected) || ae.Rollback != nil {
			t.Fatalf("call %d: want an injected failure rolled back cleanly, got %v", n, err)
		}
		if got := state(); got != before {
			t.Fatalf("after a failure at call %d (%s) the kernel differs:\n--- before\n%s\n--- after\n%s", n, ae.Step, before, got)
		}
	}
	e.Kernel = host
	out := nstest.Run(t, w.host, "bridge", "vlan", "show", "dev", "g1-0")
	if !strings.Contains(out, "30 PVID") || strings.Contains(out, "10") {
		t.Errorf("g1-0 after the change:\n%s", out)
	}
	if !pings(w.g["g4"], "10.10.0.254") {
		t.Error("the trunk g4 lost VLAN 10 after the change")
	}
}
