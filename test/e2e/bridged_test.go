//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/lab"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// hybridConfig is the lab host with a bridged network on its uplink next to
// a NAT network that leaves through it.
const hybridConfig = `networks:
  - {name: lan, mode: bridged, uplink: eth0}
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
vms:
  - name: app1
    interfaces: [{network: lan, mac: "52:54:00:00:00:30", tap: app1-0}]
  - name: db1
    interfaces: [{network: dev, mac: "52:54:00:00:00:11", tap: db1-0}]
`

// ticker is an open TCP connection from a lab node to an echo server: a
// numbered message goes out every 50 ms and the arrival of each echo is
// timed, so a pause in the connection shows as a gap between echoes.
type ticker struct {
	mu       sync.Mutex
	sent     int
	got      int
	outOfSeq int
	last     time.Time
	maxGap   time.Duration
	exited   chan struct{}
	stop     chan struct{}
}

const tickEvery = 50 * time.Millisecond

func (w *world) ticker(node, addr, port string) *ticker {
	w.t.Helper()
	cmd := w.lab.Command(context.Background(), node, "socat", "-", "TCP:"+addr+":"+port)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	tk := &ticker{exited: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			n, _ := strconv.Atoi(sc.Text())
			now := time.Now()
			tk.mu.Lock()
			if n != tk.got+1 {
				tk.outOfSeq++
			}
			tk.got = n
			if !tk.last.IsZero() && now.Sub(tk.last) > tk.maxGap {
				tk.maxGap = now.Sub(tk.last)
			}
			tk.last = now
			tk.mu.Unlock()
		}
		cmd.Wait()
		close(tk.exited)
	}()
	go func() {
		t := time.NewTicker(tickEvery)
		defer t.Stop()
		for {
			select {
			case <-tk.stop:
				in.Close()
				return
			case <-t.C:
			}
			tk.mu.Lock()
			tk.sent++
			n := tk.sent
			tk.mu.Unlock()
			if _, err := fmt.Fprintf(in, "%d\n", n); err != nil {
				return
			}
		}
	}()
	w.t.Cleanup(func() {
		select {
		case <-tk.stop:
		default:
			close(tk.stop)
		}
		cmd.Process.Kill()
	})
	return tk
}

func (tk *ticker) counts() (sent, got int) {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	return tk.sent, tk.got
}

// window resets the longest gap, so the next one measured is a change's.
func (tk *ticker) window() {
	tk.mu.Lock()
	tk.maxGap = 0
	tk.mu.Unlock()
}

func (tk *ticker) gap() time.Duration {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	return tk.maxGap
}

// retransmits reads the TCP segments node's namespace has retransmitted
// (RetransSegs of /proc/net/snmp, counted per namespace). The lab's LAN
// and host carry no other TCP while a window is measured, so a rise is a
// segment of the echo stream lost and sent again.
func (w *world) retransmits(node string) int {
	w.t.Helper()
	var head []string
	for _, line := range strings.Split(w.mustExec(node, "cat", "/proc/net/snmp"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, name := range head {
			if name == "RetransSegs" && i < len(f) {
				n, err := strconv.Atoi(f[i])
				if err != nil {
					w.t.Fatalf("RetransSegs in %s: %v", node, err)
				}
				return n
			}
		}
	}
	w.t.Fatalf("no RetransSegs in %s's /proc/net/snmp", node)
	return 0
}

// pauseBound is the longest gap between two echoes that still counts as
// "no measurable pause" for the README's claim about converting and
// destroying. The strict check is the retransmission counters: with a
// message every 50 ms a segment is always in flight, so any pause of TCP's
// minimum retransmission timeout (200 ms) or more in the network, whether
// frames are dropped or held, retransmits one; that is how the repair of a
// deleted bridge below shows (1 segment, a 260-294 ms gap). The gap bound
// catches a stall of the stream's processes and must stay above
// scheduling noise: gaps measured for the conversion and destroy, with 0
// segments retransmitted, are 51-58 ms on a quiet machine and up to 265 ms
// with other tests or three busy loops on this 2-core machine (twelve
// runs); the bound is about four times that.
const pauseBound = time.Second

// repairBound is the longest gap allowed while the daemon puts back a
// bridge deleted by hand: the stream is cut until then. Issue 7's bound
// for a repair is 2 s; TCP's backoff after the first lost segment (200,
// then 400 ms) adds up to about 1 s more before the stream resumes.
// Measured: 51-294 ms, with and without three busy loops.
const repairBound = 3 * time.Second

// checkPause fails the test when the window just measured paused the
// stream longer than bound, or (when noLoss) retransmitted a segment.
func (w *world) checkPause(tk *ticker, what string, bound time.Duration, noLoss bool, lanRe, hostRe int) {
	w.t.Helper()
	gap := tk.gap()
	lan, host := w.retransmits("lan")-lanRe, w.retransmits("host")-hostRe
	w.t.Logf("%s: longest gap between echoes (sent every %s): %s; segments retransmitted: %d by the LAN, %d by the host", what, tickEvery, gap, lan, host)
	if gap >= bound {
		w.t.Errorf("%s paused the TCP stream for %s (bound %s)", what, gap, bound)
	}
	if noLoss && lan+host > 0 {
		w.t.Errorf("%s lost TCP segments: %d retransmitted by the LAN, %d by the host", what, lan, host)
	}
}

// waitEchoes waits until n more echoes than now have come back.
func (w *world) waitEchoes(tk *ticker, n int) {
	w.t.Helper()
	_, from := tk.counts()
	w.waitFor(fmt.Sprintf("%d more echoes", n), 15*time.Second, func() bool {
		select {
		case <-tk.exited:
			w.t.Fatalf("the TCP stream ended")
		default:
		}
		_, got := tk.counts()
		return got >= from+n
	})
}

func (w *world) mac(node, link string) string {
	w.t.Helper()
	var l []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(w.mustExec(node, "ip", "-j", "link", "show", link)), &l); err != nil || len(l) != 1 {
		w.t.Fatalf("reading %s's MAC in %s: %v", link, node, err)
	}
	return l[0].Address
}

// TestBridged converts the host's uplink into a bridge port under an open
// TCP connection, checks the guests of both networks, and destroys.
func TestBridged(t *testing.T) {
	w := newWorld(t, hybridConfig)
	before := w.dumps()
	hostMAC := w.mac("host", "eth0")
	w.serve("host", "socat", "TCP-LISTEN:7000,reuseaddr,fork", "EXEC:cat")
	w.waitFor("the host's echo server", 10*time.Second, func() bool {
		out, _ := w.exec("host", "ss", "-Hltn", "sport = :7000")
		return strings.Contains(out, "LISTEN")
	})
	tk := w.ticker("lan", lab.HostLAN, "7000")
	w.waitEchoes(tk, 10)
	w.startDaemon()

	tk.window()
	lanRe, hostRe := w.retransmits("lan"), w.retransmits("host")
	out := w.mustKvmnet("apply", "-f", w.file)
	w.waitEchoes(tk, 20)
	t.Logf("conversion: %s", strings.TrimSpace(out))
	w.checkPause(tk, "the conversion", pauseBound, true, lanRe, hostRe)

	// Same address, same MAC, seen from the LAN.
	if got := w.mac("host", "kv-lan"); got != hostMAC {
		t.Errorf("kv-lan's MAC is %s, want the uplink's %s", got, hostMAC)
	}
	if addr := w.mustExec("host", "ip", "-br", "addr", "show", "kv-lan"); !strings.Contains(addr, lab.HostLAN+"/24") {
		t.Errorf("kv-lan lacks the host's address:\n%s", addr)
	}
	if eth0 := w.mustExec("host", "ip", "-d", "addr", "show", "eth0"); strings.Contains(eth0, "inet ") || !strings.Contains(eth0, "master kv-lan") {
		t.Errorf("eth0 after the conversion:\n%s", eth0)
	}
	if r := w.mustExec("host", "ip", "route", "show", "default"); !strings.Contains(r, "via "+lab.RouterLAN+" dev kv-lan") {
		t.Errorf("default route after the conversion: %s", r)
	}
	if n := w.mustExec("lan", "ip", "neigh", "show", lab.HostLAN); !strings.Contains(n, hostMAC) {
		t.Errorf("the router's neighbour entry of the host: %q, want MAC %s", n, hostMAC)
	}
	if out := w.mustKvmnet("apply", "-f", w.file); strings.TrimSpace(out) != "no changes" {
		t.Errorf("second apply:\n%s", out)
	}

	// A guest of the bridged network is on the LAN: the LAN's DHCP server
	// answers it, and the internet host sees its own address.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lease, err := w.lab.DHCP(ctx, "app1", "eth0")
	if err != nil {
		t.Fatalf("dhcp in app1: %v", err)
	}
	if first, last := netip.MustParseAddr(lab.DHCPFirst), netip.MustParseAddr(lab.DHCPLast); lease.IP.Less(first) || last.Less(lease.IP) || lease.ServerID.String() != lab.RouterLAN {
		t.Errorf("app1's lease: %s from server %s; want an address of the LAN's pool from %s", lease.IP, lease.ServerID, lab.RouterLAN)
	}
	if !w.pings("app1", lab.RouterLAN) {
		t.Errorf("app1 does not reach the LAN router")
	}
	// Port security binds app1 to the address the LAN's server gave it
	// (DHCP snooping): its lease shows, and a spoofed source is dropped.
	if leases := w.mustKvmnet("get", "leases"); !strings.Contains(leases, "52:54:00:00:00:30  "+lease.IP.String()) {
		t.Errorf("get leases lacks app1's snooped lease %s:\n%s", lease.IP, leases)
	}
	ipDrops := w.drops("app1-0", "ip")
	w.exec("app1", "hping3", "-1", "-c", "3", "-i", "u100000", "-a", "172.30.0.199", lab.Internet)
	if got := w.drops("app1-0", "ip"); got < ipDrops+3 {
		t.Errorf("app1's spoofed packets: ip drops %d -> %d, want +3", ipDrops, got)
	}
	w.serve("inet", "socat", "TCP-LISTEN:8000,reuseaddr,fork", "SYSTEM:echo $SOCAT_PEERADDR")
	w.serve("app1", "socat", "TCP-LISTEN:9000,reuseaddr,fork", "SYSTEM:echo $SOCAT_PEERADDR")
	var seen string
	w.waitFor("app1 to reach the internet host", 10*time.Second, func() bool {
		seen = w.ask("app1", lab.Internet, "8000")
		return seen != ""
	})
	if seen != lease.IP.String() {
		t.Errorf("the internet host sees app1 as %q, want its own address %s (no NAT)", seen, lease.IP)
	}
	if got := w.ask("lan", lease.IP.String(), "9000"); got != lab.RouterLAN {
		t.Errorf("app1 seen from the LAN: %q (want the router's connection, from %s)", got, lab.RouterLAN)
	}
	// kvmnet's own DHCP serves the NAT network only.
	db1 := w.lease("db1")
	if got := w.ask("db1", lease.IP.String(), "9000"); got != lab.HostLAN {
		t.Errorf("app1 sees the NAT guest db1 (%s) as %q, want the host's LAN address %s (masquerade)", db1, got, lab.HostLAN)
	}
	if socks := w.mustExec("host", "ss", "-Hlunp"); strings.Contains(socks, "%kv-lan") {
		t.Errorf("a server listens on the bridged network:\n%s", socks)
	}
	nets := w.mustKvmnet("get", "networks")
	if !strings.Contains(nets, "kv-lan") || !strings.Contains(nets, "bridged") || !strings.Contains(nets, lab.HostLAN+"/24") {
		t.Errorf("get networks:\n%s", nets)
	}
	// The bridge's own nf_call_* are off; the global sysctls, when
	// br_netfilter is loaded, are reported.
	if d := w.mustExec("host", "ip", "-d", "link", "show", "kv-lan"); strings.Contains(d, "nf_call_iptables 1") {
		t.Errorf("kv-lan calls iptables:\n%s", d)
	}
	if v, err := w.exec("host", "sysctl", "-n", "net.bridge.bridge-nf-call-iptables"); err == nil && strings.TrimSpace(v) == "1" {
		if !strings.Contains(nets, "br_netfilter is loaded and net.bridge.bridge-nf-call-") {
			t.Errorf("get networks does not say that br_netfilter's global sysctl applies:\n%s", nets)
		}
	} else {
		t.Logf("br_netfilter not loaded here: the global-sysctl note is not checked")
	}

	// The daemon repairs a bridge deleted by hand: it takes the host's
	// address and routes with it, and they come back with the bridge.
	tk.window()
	lanRe, hostRe = w.retransmits("lan"), w.retransmits("host")
	w.mustExec("host", "ip", "link", "del", "kv-lan")
	w.waitFor("the daemon to bring kv-lan back with the host's address", 10*time.Second, func() bool {
		out, _ := w.exec("host", "ip", "route", "show", "default")
		return strings.Contains(out, "dev kv-lan")
	})
	w.waitEchoes(tk, 20)
	// The stream is cut until the repair: segments are lost, and only
	// the pause is bounded.
	w.checkPause(tk, "the repair of kv-lan deleted by hand", repairBound, false, lanRe, hostRe)
	if got := w.mac("host", "kv-lan"); got != hostMAC {
		t.Errorf("the recreated kv-lan has MAC %s, want %s", got, hostMAC)
	}

	// Destroy gives everything back, under the same connection.
	tk.window()
	lanRe, hostRe = w.retransmits("lan"), w.retransmits("host")
	w.mustKvmnet("destroy")
	w.waitEchoes(tk, 20)
	w.checkPause(tk, "destroy", pauseBound, true, lanRe, hostRe)
	close(tk.stop)
	w.waitFor("the stream to drain", 10*time.Second, func() bool {
		sent, got := tk.counts()
		return got == sent
	})
	if tk.outOfSeq != 0 {
		t.Errorf("%d echoes out of sequence", tk.outOfSeq)
	}
	sent, got := tk.counts()
	t.Logf("TCP stream: %d messages sent, %d echoed", sent, got)
	w.stopDaemon()
	compareDumps(t, "destroy after a bridged apply", before, w.dumps())
}

func writeFile(t *testing.T, name, doc string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// pendingDeadline reads the deadline of the pending apply.
func (w *world) pendingDeadline() time.Time {
	w.t.Helper()
	var p struct {
		Deadline time.Time `json:"deadline"`
	}
	if err := json.Unmarshal([]byte(w.mustKvmnet("get", "pending", "-o", "json")), &p); err != nil || p.Deadline.IsZero() {
		w.t.Fatalf("get pending: %v", err)
	}
	return p.Deadline
}

func (w *world) converted() bool {
	out, err := w.exec("host", "ip", "-d", "link", "show", "eth0")
	return err == nil && strings.Contains(out, "master kv-lan")
}

// TestConfirm: apply --confirm rolls back a change that cuts the host off
// at once, rolls back an unconfirmed one at its deadline (the CLI long
// gone; without a daemon, and with one), and keeps a confirmed one.
func TestConfirm(t *testing.T) {
	w := newWorld(t, "")
	before := w.dumps()
	broken := writeFile(t, "broken.yaml", "networks:\n  - {name: lan, mode: bridged, uplink: eth0, hostAddress: none}\n")
	good := writeFile(t, "good.yaml", "networks:\n  - {name: lan, mode: bridged, uplink: eth0}\n")

	// The host loses its address: the gateway probe fails, rolled back.
	start := time.Now()
	out, err := w.kvmnet("apply", "-f", broken, "--confirm", "5s")
	// Rolled back by the gateway probe, not by any other failure.
	if err == nil || !strings.Contains(out, "lost its gateway after the apply") || !strings.Contains(out, "rolled back") {
		t.Fatalf("apply of a config that cuts the host off: %v\n%s", err, out)
	}
	w.waitFor("the host to answer from the LAN", 10*time.Second, func() bool { return w.pings("lan", lab.HostLAN) })
	t.Logf("cut-off config: host reachable again %s after the apply started (%s)", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	compareDumps(t, "after a rolled back cut-off", before, w.dumps())

	// No confirmation, no daemon: the detached timer rolls back.
	for _, daemon := range []bool{false, true} {
		if daemon {
			w.startDaemon()
			// The daemon probes and rolls back a cut-off as well.
			out, err := w.kvmnet("apply", "-f", broken, "--confirm", "5s")
			if err == nil || !strings.Contains(out, "lost its gateway after the apply") || !strings.Contains(out, "rolled back") {
				t.Fatalf("apply of a cut-off config through the daemon: %v\n%s", err, out)
			}
			compareDumps(t, "after a cut-off rolled back by the daemon", before, w.dumps())
		}
		out := w.mustKvmnet("apply", "-f", good, "--confirm", "3s")
		if !w.converted() || !strings.Contains(out, "waits for confirmation") {
			t.Fatalf("apply --confirm (daemon %t):\n%s", daemon, out)
		}
		deadline := w.pendingDeadline()
		w.waitFor("the rollback", 15*time.Second, func() bool { return !w.converted() })
		w.waitFor("the host's address on eth0", 5*time.Second, func() bool {
			out, _ := w.exec("host", "ip", "-br", "addr", "show", "eth0")
			return strings.Contains(out, lab.HostLAN+"/24")
		})
		t.Logf("unconfirmed (daemon %t): uplink given back %s after the deadline", daemon, time.Since(deadline).Round(time.Millisecond))
		if time.Now().Before(deadline) {
			t.Errorf("rolled back before the deadline")
		}
		if p := w.mustKvmnet("get", "pending"); !strings.Contains(p, "nothing waits") {
			t.Errorf("get pending after the rollback:\n%s", p)
		}
		if ev := w.mustKvmnet("events"); !strings.Contains(ev, "not confirmed in time") {
			t.Errorf("events lack the rollback:\n%s", ev)
		}
		if daemon {
			w.stopDaemon()
		}
		compareDumps(t, fmt.Sprintf("after an unconfirmed apply (daemon %t)", daemon), before, w.dumps())
	}

	// Confirmed: the change stays past the deadline.
	w.mustKvmnet("apply", "-f", good, "--confirm", "3s")
	deadline := w.pendingDeadline()
	w.mustKvmnet("confirm")
	w.waitFor("the deadline to pass", 10*time.Second, func() bool { return time.Now().After(deadline.Add(time.Second)) })
	if !w.converted() {
		t.Errorf("a confirmed apply was rolled back")
	}
	if out, err := w.kvmnet("confirm"); err == nil {
		t.Errorf("a second confirm succeeded:\n%s", out)
	}

	// On a converted host, hostAddress: none takes the host's address off
	// the bridge: caught by the probe, and the rollback puts back the
	// whole previous state (a NAT network whose egress is the default
	// route's link included).
	hybrid := writeFile(t, "hybrid.yaml", strings.Replace(hybridConfig, "vms:", "  - {name: test, mode: nat, subnet: 192.168.200.0/24}\nvms:", 1))
	// The NAT bridges are deleted and made again (new ifindex, new random
	// MAC): compare what matters to traffic.
	host := w.lab.NS("host")
	w.mustKvmnet("apply", "-f", hybrid)
	nstest.WaitDAD(t, host)
	converted := nstest.SemanticDump(t, host)
	// broken.yaml has no nat networks: the apply removes them on purpose.
	out, err = w.kvmnet("apply", "-f", broken, "--confirm", "30s", "--allow-removal")
	if err == nil || !strings.Contains(out, "rolled back to revision") {
		t.Fatalf("hostAddress none on a converted host: %v\n%s", err, out)
	}
	nstest.WaitDAD(t, host)
	if got := nstest.SemanticDump(t, host); got != converted {
		t.Errorf("after a rolled back hostAddress change:\n--- want\n%s\n--- got\n%s", converted, got)
	}
	w.mustKvmnet("destroy")
	compareDumps(t, "destroy after a confirmed apply", before, w.dumps())
}

// TestBridgedBadInput: what only the kernel reveals is refused with its
// position, and nothing changes.
func TestBridgedBadInput(t *testing.T) {
	w := newWorld(t, hybridConfig)
	w.mustExec("host", "ip", "link", "add", "other0", "type", "bridge")
	w.mustExec("host", "ip", "link", "set", "app1-0", "master", "other0")
	before := w.dumps()
	for _, c := range []struct{ name, doc, want string }{
		{"missing", "networks:\n  - {name: lan, mode: bridged, uplink: eth7}\n", `missing.yaml:2:40: networks[0].uplink: network "lan": uplink "eth7" does not exist`},
		{"enslaved", "networks:\n  - {name: lan, mode: bridged, uplink: app1-0}\n", `uplink "app1-0" is already a port of "other0"`},
		{"is-bridge", "networks:\n  - {name: lan, mode: bridged, uplink: other0}\n", `uplink "other0" is a bridge, not a physical interface`},
		{"same-uplink", "networks:\n  - {name: lan, mode: bridged, uplink: eth0}\n  - {name: lan2, mode: bridged, uplink: eth0}\n", `"eth0" is already the uplink of network "lan"`},
		{"subnet", "networks:\n  - {name: lan, mode: bridged, uplink: eth0, subnet: 10.0.0.0/24}\n", `subnet is only for mode nat`},
		{"dhcp", "networks:\n  - {name: lan, mode: bridged, uplink: eth0, dhcp: {range: 10.0.0.10-10.0.0.20}}\n", `dhcp is only for mode nat`},
	} {
		out, err := w.kvmnet("apply", "-f", writeFile(t, c.name+".yaml", c.doc))
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%s: %v\n%s\nwant it to contain %q", c.name, err, out, c.want)
		}
	}
	compareDumps(t, "bad bridged input", before, w.dumps())
}

// addrLifetime returns the valid lifetime of addr on link in the host (-1
// when absent).
func (w *world) addrLifetime(link, addr string) int {
	w.t.Helper()
	var links []struct {
		AddrInfo []struct {
			Local string `json:"local"`
			Valid int64  `json:"valid_life_time"`
		} `json:"addr_info"`
	}
	out, err := w.exec("host", "ip", "-j", "addr", "show", link)
	if err != nil || json.Unmarshal([]byte(out), &links) != nil {
		return -1
	}
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if a.Local == addr {
				return int(a.Valid)
			}
		}
	}
	return -1
}

// TestBridgedHostDHCP: an address the uplink had learned by DHCP keeps
// being renewed on the bridge by the daemon's DHCP client, from the LAN's
// server; hostAddress: dhcp leases one for the bridge.
func TestBridgedHostDHCP(t *testing.T) {
	w := newWorld(t, "")
	// The uplink's lease, as a DHCP client on eth0 would have left it:
	// a secondary address with a finite lifetime, in the LAN's pool.
	w.mustExec("host", "ip", "addr", "add", "172.30.0.150/24", "dev", "eth0", "valid_lft", "100", "preferred_lft", "100")
	before := w.dumps()
	w.startDaemon()
	w.mustKvmnet("apply", "-f", writeFile(t, "keep.yaml", "networks:\n  - {name: lan, mode: bridged, uplink: eth0}\n"))
	// Moved with what was left of its 100 s, or renewed already.
	if got := w.addrLifetime("kv-lan", "172.30.0.150"); got <= 0 || got > 100 && got < 1000 {
		t.Fatalf("the leased address on kv-lan has lifetime %d, want what was left of 100 s or a renewed lease", got)
	}
	if got := w.addrLifetime("eth0", "172.30.0.150"); got != -1 {
		t.Errorf("the leased address is still on eth0 (lifetime %d)", got)
	}
	w.waitFor("the lease to be renewed on kv-lan", 20*time.Second, func() bool {
		return w.addrLifetime("kv-lan", "172.30.0.150") > 1000 // the LAN's leases last an hour
	})
	if nets := w.mustKvmnet("get", "networks"); !strings.Contains(nets, "host address 172.30.0.150/24 leased by dhcp from "+lab.RouterLAN) {
		t.Errorf("get networks does not show the host's lease:\n%s", nets)
	}
	if got := w.addrLifetime("kv-lan", lab.HostLAN); got != 0xFFFFFFFF {
		t.Errorf("the static address on kv-lan has lifetime %d, want forever", got)
	}
	w.mustKvmnet("destroy")
	if got := w.addrLifetime("eth0", "172.30.0.150"); got <= 1000 {
		t.Errorf("after destroy eth0 holds the lease with lifetime %d, want the renewed one", got)
	}
	// The lifetime is the renewed one now; everything else is as before.
	w.mustExec("host", "ip", "addr", "change", "172.30.0.150/24", "dev", "eth0", "valid_lft", "100", "preferred_lft", "100")
	compareDumps(t, "destroy after a renewed lease", before, w.dumps())

	// hostAddress: dhcp: the bridge leases an address of its own.
	w.mustExec("host", "ip", "addr", "del", "172.30.0.150/24", "dev", "eth0")
	w.mustKvmnet("apply", "-f", writeFile(t, "dhcp.yaml", "networks:\n  - {name: lan, mode: bridged, uplink: eth0, hostAddress: dhcp}\n"))
	var leased netip.Addr
	w.waitFor("kv-lan to lease an address", 30*time.Second, func() bool {
		out, _ := w.exec("host", "ip", "-4", "-br", "addr", "show", "kv-lan")
		for _, f := range strings.Fields(out) {
			if p, err := netip.ParsePrefix(f); err == nil && p.Addr().String() != lab.HostLAN {
				leased = p.Addr()
				return true
			}
		}
		return false
	})
	if first, last := netip.MustParseAddr(lab.DHCPFirst), netip.MustParseAddr(lab.DHCPLast); leased.Less(first) || last.Less(leased) {
		t.Errorf("kv-lan leased %s, outside the LAN's pool", leased)
	}
	w.mustKvmnet("destroy")
}
