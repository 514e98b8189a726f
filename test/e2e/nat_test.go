//go:build e2e

package e2e

import (
	"context"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// natConfig is the lab's host: two NAT networks; dev has a reservation
// (web1), a pool guest (db1) and a newcomer (new1); test has no dhcp key,
// so it serves DHCP with the defaults.
const natConfig = `
networks:
  - name: dev
    mode: nat
    subnet: 192.168.100.0/24
    dhcp: {range: 192.168.100.100-192.168.100.199, lease: 1h}
    dns: {domain: dev.kvm}
    egress: eth0
  - name: test
    mode: nat
    subnet: 192.168.200.0/24
vms:
  - name: web1
    interfaces:
      - {network: dev, mac: "52:54:00:00:00:10", ip: 192.168.100.10, tap: web1-0}
  - name: db1
    interfaces:
      - {network: dev, mac: "52:54:00:00:00:11", tap: db1-0}
  - name: new1
    interfaces:
      - {network: dev, mac: "52:54:00:00:00:12", tap: new1-0}
  - name: t1
    interfaces:
      - {network: test, mac: "52:54:00:00:00:20", tap: t1-0}
`

func (w *world) lease(vm string) netip.Addr {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := w.lab.DHCP(ctx, vm, "eth0")
	if err != nil {
		w.t.Fatalf("dhcp in %s: %v", vm, err)
	}
	return l.IP
}

// counter reads the packet counter of the kvmnet rule with comment.
func (w *world) counter(comment string) int {
	w.t.Helper()
	out := w.mustExec("host", "nft", "list", "table", "inet", "kvmnet")
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+ drop comment "` + regexp.QuoteMeta(comment) + `"`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		w.t.Fatalf("no counter for %q in:\n%s", comment, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestNATNetworks(t *testing.T) {
	w := newWorld(t, natConfig)
	before := w.dumps()

	out := w.mustKvmnet("apply", "-f", w.file)
	if !strings.Contains(out, "applied") {
		t.Fatalf("first apply: %s", out)
	}
	first := w.dumps()
	if out := w.mustKvmnet("apply", "-f", w.file); strings.TrimSpace(out) != "no changes" {
		t.Fatalf("second apply changed something:\n%s", out)
	}
	compareDumps(t, "apply twice", first, w.dumps())
	if got := first["forward"]; !strings.Contains(got, "= 1") {
		t.Errorf("ip_forward after apply: %q", got)
	}

	w.startDaemon()

	t.Run("dhcp", func(t *testing.T) {
		if ip := w.lease("web1"); ip != netip.MustParseAddr("192.168.100.10") {
			t.Errorf("web1 got %s, want its reservation 192.168.100.10", ip)
		}
		db := w.lease("db1")
		if !inRange(db, "192.168.100.100", "192.168.100.199") {
			t.Errorf("db1 got %s, want an address of the pool", db)
		}
		t1 := w.lease("t1")
		// No dhcp key: the default pool is the upper half of the subnet.
		if !inRange(t1, "192.168.200.128", "192.168.200.254") {
			t.Errorf("t1 got %s, want the default pool 192.168.200.128-254", t1)
		}
		// Restart the daemon the hard way; leases survive.
		w.stopDaemon()
		w.startDaemon()
		n := w.lease("new1")
		if n == db || n == netip.MustParseAddr("192.168.100.10") {
			t.Errorf("newcomer after restart got %s, an address that is taken", n)
		}
		if again := w.lease("db1"); again != db {
			t.Errorf("db1 after restart got %s, had %s", again, db)
		}
		if again := w.lease("web1"); again != netip.MustParseAddr("192.168.100.10") {
			t.Errorf("web1 after restart got %s", again)
		}
		leases := w.mustKvmnet("get", "leases")
		if !strings.Contains(leases, db.String()) || !strings.Contains(leases, n.String()) {
			t.Errorf("get leases misses a lease:\n%s", leases)
		}
	})

	t.Run("dns", func(t *testing.T) {
		if got := strings.TrimSpace(w.mustExec("web1", "dig", "+short", "+time=2", "+tries=2", "db1.dev.kvm")); got != w.lease("db1").String() {
			t.Errorf("db1.dev.kvm from web1: %q", got)
		}
		if got := strings.TrimSpace(w.mustExec("db1", "dig", "+short", "+time=2", "web1.dev.kvm")); got != "192.168.100.10" {
			t.Errorf("web1.dev.kvm from db1: %q", got)
		}
		if got := strings.TrimSpace(w.mustExec("web1", "dig", "+short", "+time=2", "-x", "192.168.100.10")); got != "web1.dev.kvm." {
			t.Errorf("PTR of web1: %q", got)
		}
		// Upstream names are forwarded to the host's resolver (the LAN's
		// dnsmasq).
		if got := strings.TrimSpace(w.mustExec("web1", "dig", "+short", "+time=2", "internet.lab")); got != "203.0.113.10" {
			t.Errorf("internet.lab from web1: %q", got)
		}
		// The forwarder does not answer on the uplink: no open resolver.
		if out, err := w.exec("lan", "dig", "+time=1", "+tries=1", "@172.30.0.2", "internet.lab"); err == nil && strings.Contains(out, "ANSWER SECTION") {
			t.Errorf("kvmnet answered DNS on the uplink:\n%s", out)
		}
	})

	t.Run("masquerade", func(t *testing.T) {
		w.lease("web1")
		w.mustExec("web1", "ping", "-c1", "-W2", "203.0.113.10")
		// The internet host answers with the peer address it sees.
		srv := w.lab.Command(context.Background(), "inet", "socat", "TCP-LISTEN:8000,reuseaddr,fork", "SYSTEM:echo $SOCAT_PEERADDR")
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { srv.Process.Kill(); srv.Wait() }()
		var seen string
		w.waitFor("tcp through NAT", 10*time.Second, func() bool {
			out, err := w.exec("web1", "nc", "-w2", "203.0.113.10", "8000")
			seen = strings.TrimSpace(out)
			return err == nil && seen != ""
		})
		if seen != "172.30.0.2" {
			t.Errorf("internet host saw %q, want the host's uplink address 172.30.0.2", seen)
		}
	})

	t.Run("isolation", func(t *testing.T) {
		w.lease("web1")
		w.lease("t1")
		// Give the internet a route to the NAT subnet, so that only
		// kvmnet's firewall stands between it and the guest.
		w.mustExec("lan", "ip", "route", "replace", "192.168.100.0/24", "via", "172.30.0.2")
		web := w.lab.Command(context.Background(), "web1", "socat", "TCP-LISTEN:80,reuseaddr,fork", "SYSTEM:echo hello")
		if err := web.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { web.Process.Kill(); web.Wait() }()
		w.waitFor("web1 serving", 5*time.Second, func() bool {
			out, _ := w.exec("web1", "nc", "-w1", "127.0.0.1", "80")
			return strings.Contains(out, "hello")
		})
		in := w.counter("into-nat-drop")
		if out, err := w.exec("inet", "nc", "-w2", "192.168.100.10", "80"); err == nil && strings.Contains(out, "hello") {
			t.Errorf("internet host opened a connection to a NAT guest")
		}
		if got := w.counter("into-nat-drop"); got <= in {
			t.Errorf("into-nat-drop counter did not move (%d -> %d)", in, got)
		}
		between := w.counter("between-networks-drop")
		if _, err := w.exec("t1", "ping", "-c1", "-W1", "192.168.100.10"); err == nil {
			t.Errorf("guest of network test reached a guest of network dev")
		}
		if out, err := w.exec("t1", "nc", "-w1", "192.168.100.10", "80"); err == nil && strings.Contains(out, "hello") {
			t.Errorf("guest of network test opened a connection into network dev")
		}
		if got := w.counter("between-networks-drop"); got <= between {
			t.Errorf("between-networks-drop counter did not move (%d -> %d)", between, got)
		}
	})

	t.Run("get", func(t *testing.T) {
		nets := w.mustKvmnet("get", "networks")
		for _, want := range []string{"dev", "kv-dev", "192.168.100.0/24", "up", "3/3"} {
			if !strings.Contains(nets, want) {
				t.Errorf("get networks misses %q:\n%s", want, nets)
			}
		}
		if vms := w.mustKvmnet("get", "vms", "-o", "json"); !strings.Contains(vms, `"state": "attached"`) {
			t.Errorf("get vms -o json:\n%s", vms)
		}
	})

	w.stopDaemon()
	w.mustKvmnet("destroy")
	compareDumps(t, "destroy", before, w.dumps())
}

func inRange(ip netip.Addr, first, last string) bool {
	return ip.Compare(netip.MustParseAddr(first)) >= 0 && ip.Compare(netip.MustParseAddr(last)) <= 0
}
