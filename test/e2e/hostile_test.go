//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/lab"
)

// dhcpAttack sends hand-made DHCP client messages out of an interface of
// the guest it runs in, from a packet socket: broadcast, from 0.0.0.0 (a
// client without an address, which port security lets through), with the
// Ethernet source and chaddr the caller picks.
//
//	dhcp-attack.py IFACE SRC_MAC TYPE CHADDR CIADDR REQUESTED SERVER_ID [UNTIL_FILE]
//
// TYPE is release or decline; SRC_MAC or CHADDR "random" draws a new
// locally administered MAC per message; REQUESTED may be FIRST-LAST, one
// message per address. With UNTIL_FILE it goes round again, a round a
// millisecond, until that file exists.
const dhcpAttack = `import os, random, socket, struct, sys, time

iface, src, typ, chaddr, ciaddr, requested, server = sys.argv[1:8]
until = sys.argv[8] if len(sys.argv) > 8 else None
types = {"release": 7, "decline": 4}

def mac(s):
    if s == "random":
        return bytes([0x02]) + os.urandom(5)
    return bytes.fromhex(s.replace(":", ""))

def ip(s):
    return socket.inet_aton(s)

def checksum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff

first, _, last = requested.partition("-")
last = last or first
lo, hi = struct.unpack("!I", ip(first))[0], struct.unpack("!I", ip(last))[0]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((iface, 0))

def send(n):
    ch, sm = mac(chaddr), mac(src)
    if chaddr == "random" and src == "random":
        sm = ch
    opts = bytes([53, 1, types[typ], 50, 4]) + struct.pack("!I", n) + bytes([54, 4]) + ip(server) + bytes([255])
    bootp = struct.pack("!BBBBIHH4s4s4s4s", 1, 1, 6, 0, random.getrandbits(32), 0, 0, ip(ciaddr), bytes(4), bytes(4), bytes(4))
    bootp += ch + bytes(10) + bytes(64) + bytes(128) + bytes([99, 130, 83, 99]) + opts
    udp = struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bootp
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes(4), bytes([255] * 4))
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    sock.send(bytes([255] * 6) + sm + b"\x08\x00" + hdr + udp)

while True:
    for n in range(lo, hi + 1):
        send(n)
    if until is None or os.path.exists(until):
        break
    time.sleep(0.001)
`

// hostileConfig is a NAT network with a pool of ten addresses; victim has
// a pool lease, web1 a reservation, mallory spoofguard, eve none.
const hostileConfig = `
networks:
  - name: dev
    mode: nat
    subnet: 192.168.150.0/24
    dhcp: {range: 192.168.150.100-192.168.150.109, lease: 1h}
    dns: {domain: dev.kvm}
    egress: eth0
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:15:10", ip: 192.168.150.10, tap: web1-0}]
  - name: victim
    interfaces: [{network: dev, mac: "52:54:00:00:15:11", tap: victim-0}]
  - name: other
    interfaces: [{network: dev, mac: "52:54:00:00:15:12", tap: other-0}]
  - name: mallory
    interfaces: [{network: dev, mac: "52:54:00:00:15:13", tap: mallory-0}]
  - name: eve
    interfaces: [{network: dev, mac: "52:54:00:00:15:14", tap: eve-0, security: {spoofguard: false}}]
`

const (
	hostileGateway = "192.168.150.1"
	victimMAC      = "52:54:00:00:15:11"
	web1MAC        = "52:54:00:00:15:10"
	malloryMAC     = "52:54:00:00:15:13"
)

// attackScript writes dhcpAttack and returns its path.
func (w *world) attackScript() string {
	w.t.Helper()
	script := filepath.Join(w.t.TempDir(), "dhcp-attack.py")
	if err := os.WriteFile(script, []byte(dhcpAttack), 0o644); err != nil {
		w.t.Fatal(err)
	}
	return script
}

// attack runs dhcpAttack in guest vm.
func (w *world) attack(vm string, args ...string) {
	w.t.Helper()
	w.mustExec(vm, append([]string{"python3", w.attackScript(), "eth0"}, args...)...)
}

// attackUntilStopped runs dhcpAttack in guest vm round after round until
// the returned function is called, which waits for it to end.
func (w *world) attackUntilStopped(t *testing.T, vm string, args ...string) (stop func()) {
	t.Helper()
	until := filepath.Join(t.TempDir(), "stop")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd := w.lab.Command(ctx, vm, append(append([]string{"python3", w.attackScript(), "eth0"}, args...), until)...)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	return func() {
		defer cancel()
		if err := os.WriteFile(until, nil, 0o644); err != nil {
			t.Error(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("attack in %s: %v: %s", vm, err, out)
		}
	}
}

// leaseOf returns the lease record of mac as the daemon reports it.
func (w *world) leaseOf(mac string) (netip.Addr, time.Time, bool) {
	w.t.Helper()
	var got struct {
		Leases []struct {
			MAC    string     `json:"mac"`
			IP     netip.Addr `json:"ip"`
			Expiry time.Time  `json:"expiry"`
		} `json:"leases"`
	}
	if err := json.Unmarshal([]byte(w.mustKvmnet("get", "leases", "-o", "json")), &got); err != nil {
		w.t.Fatal(err)
	}
	for _, l := range got.Leases {
		if l.MAC == mac {
			return l.IP, l.Expiry, true
		}
	}
	return netip.Addr{}, time.Time{}, false
}

// tryLease runs udhcpc in guest vm and returns the address it got; unlike
// lease it reports failure to t, the subtest's.
func (w *world) tryLease(t *testing.T, vm string) netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := w.lab.DHCP(ctx, vm, "eth0")
	if err != nil {
		t.Errorf("dhcp in %s: %v", vm, err)
		return netip.Addr{}
	}
	return l.IP
}

// poolUsed returns how many addresses of the pool are used now.
func (w *world) poolUsed() int {
	w.t.Helper()
	var got struct {
		Pools []struct {
			Used int `json:"used"`
		} `json:"pools"`
	}
	if err := json.Unmarshal([]byte(w.mustKvmnet("get", "leases", "-o", "json")), &got); err != nil {
		w.t.Fatal(err)
	}
	if len(got.Pools) != 1 {
		w.t.Fatalf("%d pools, want 1", len(got.Pools))
	}
	return got.Pools[0].Used
}

// ignored reads kvmnet_dhcp_ignored_total of a message type from the
// daemon's metrics, summed over reasons.
func (w *world) ignored(typ string) int {
	w.t.Helper()
	out := w.mustExec("host", "curl", "-s", "--max-time", "5", "http://127.0.0.1:9477/metrics")
	re := regexp.MustCompile(`(?m)^kvmnet_dhcp_ignored_total\{[^}]*type="` + typ + `"[^}]*\} (\d+)`)
	n := 0
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n
}

// TestHostileGuests: one guest with spoofguard (mallory) and one without
// (eve) try to take the others' leases and the pool, and the LAN, which
// routes the NAT subnet to the host, asks the gateway for names. The
// victims keep their leases, newcomers still get one, guests still
// resolve, and the LAN gets no answer.
func TestHostileGuests(t *testing.T) {
	w := newWorld(t, hostileConfig)
	w.mustKvmnet("apply", "-f", w.file)
	w.startDaemon()
	victimIP := w.lease("victim")
	if ip := w.lease("web1"); ip.String() != "192.168.150.10" {
		t.Fatalf("web1 got %s", ip)
	}
	_, victimExpiry, _ := w.leaseOf(victimMAC)
	_, web1Expiry, _ := w.leaseOf(web1MAC)

	t.Run("spoofed release", func(t *testing.T) {
		// chaddr forged, Ethernet source the attacker's own (all
		// spoofguard lets through); then both forged, from eve.
		w.attack("mallory", malloryMAC, "release", victimMAC, victimIP.String(), victimIP.String(), hostileGateway)
		w.attack("mallory", malloryMAC, "release", web1MAC, "192.168.150.10", "192.168.150.10", hostileGateway)
		w.attack("eve", victimMAC, "release", victimMAC, victimIP.String(), victimIP.String(), hostileGateway)
		w.attack("eve", web1MAC, "release", web1MAC, "192.168.150.10", "192.168.150.10", hostileGateway)
		// Until the daemon has seen them all, or one did harm.
		w.waitFor("the spoofed RELEASEs to be handled", 10*time.Second, func() bool {
			_, v, _ := w.leaseOf(victimMAC)
			_, r, _ := w.leaseOf(web1MAC)
			return w.ignored("RELEASE") >= 4 || v.Before(victimExpiry) || r.Before(web1Expiry)
		})
		// Two forged chaddrs (mallory), two MACs of other ports (eve).
		if got := w.ignored("RELEASE"); got != 4 {
			t.Errorf("ignored RELEASEs counted %d, want 4", got)
		}
		for _, c := range []struct {
			mac    string
			ip     netip.Addr
			expiry time.Time
		}{{victimMAC, victimIP, victimExpiry}, {web1MAC, netip.MustParseAddr("192.168.150.10"), web1Expiry}} {
			ip, exp, ok := w.leaseOf(c.mac)
			if !ok || ip != c.ip || exp.Before(c.expiry) {
				t.Errorf("lease of %s after spoofed RELEASEs: %s until %s (found %v), want %s until %s", c.mac, ip, exp, ok, c.ip, c.expiry)
			}
		}
		// The victim's address and binding are its own still.
		if got := w.tryLease(t, "victim"); got != victimIP {
			t.Errorf("victim renewed to %s, had %s", got, victimIP)
		}
		w.mustExec("victim", "ping", "-c", "1", "-W", "2", hostileGateway)
	})

	t.Run("decline flood", func(t *testing.T) {
		before := w.ignored("DECLINE")
		// Every pool address, under made-up MACs: as chaddr only from
		// mallory, as chaddr and Ethernet source from eve.
		w.attack("mallory", malloryMAC, "decline", "random", "0.0.0.0", "192.168.150.100-192.168.150.109", hostileGateway)
		w.attack("eve", "random", "decline", "random", "0.0.0.0", "192.168.150.100-192.168.150.109", hostileGateway)
		w.waitFor("the DECLINEs to be handled", 10*time.Second, func() bool {
			return w.ignored("DECLINE") >= before+20 || w.poolUsed() == 10
		})
		// Mallory's ten forged chaddrs; eve's first three DECLINEs name
		// addresses their MACs do not hold, the other seven exceed the
		// port's budget.
		if got := w.ignored("DECLINE") - before; got != 20 {
			t.Errorf("ignored DECLINEs counted %d, want 20", got)
		}
		// While eve keeps flooding, another guest gets a lease, the
		// victim keeps its own, and mallory gets one too.
		before = w.ignored("DECLINE")
		stop := w.attackUntilStopped(t, "eve", "random", "decline", "random", "0.0.0.0", "192.168.150.100-192.168.150.109", hostileGateway)
		w.waitFor("the flood to be under way", 10*time.Second, func() bool { return w.ignored("DECLINE") >= before+100 || w.poolUsed() == 10 })
		other := w.tryLease(t, "other")
		if !inRange(other, "192.168.150.100", "192.168.150.109") || other == victimIP {
			t.Errorf("other got %s during the flood", other)
		}
		if got := w.tryLease(t, "victim"); got != victimIP {
			t.Errorf("victim renewed to %s during the flood, had %s", got, victimIP)
		}
		if ip := w.tryLease(t, "mallory"); !inRange(ip, "192.168.150.100", "192.168.150.109") || ip == victimIP || ip == other {
			t.Errorf("mallory got %s during the flood", ip)
		}
		stop()
		t.Logf("DECLINEs ignored during the flood: %d", w.ignored("DECLINE")-before)
		// And eve itself, once it stops.
		if ip := w.tryLease(t, "eve"); !inRange(ip, "192.168.150.100", "192.168.150.109") {
			t.Errorf("eve got %s after the flood", ip)
		}
	})

	t.Run("dns from the lan", func(t *testing.T) {
		w.mustExec("lan", "ip", "route", "replace", "192.168.150.0/24", "via", lab.HostLAN)
		// The route works: the LAN reaches the gateway address.
		w.mustExec("lan", "ping", "-c", "1", "-W", "2", hostileGateway)
		for _, args := range [][]string{
			{"internet.lab"}, {"web1.dev.kvm"}, {"+tcp", "web1.dev.kvm"}, {"+tcp", "internet.lab"},
		} {
			out, err := w.exec("lan", append([]string{"dig", "+time=1", "+tries=1", "@" + hostileGateway}, args...)...)
			if err == nil && strings.Contains(out, "ANSWER SECTION") {
				t.Errorf("the gateway answered the lan (%s):\n%s", strings.Join(args, " "), out)
			}
			if err == nil && strings.Contains(out, "status: NOERROR") {
				t.Errorf("the gateway served the lan (%s):\n%s", strings.Join(args, " "), out)
			}
		}
		// Guests still resolve, their own names and the internet's.
		if got := strings.TrimSpace(w.mustExec("victim", "dig", "+short", "+time=2", "web1.dev.kvm")); got != "192.168.150.10" {
			t.Errorf("web1.dev.kvm from victim: %q", got)
		}
		if got := strings.TrimSpace(w.mustExec("victim", "dig", "+short", "+time=2", "+tcp", "internet.lab")); got != "203.0.113.10" {
			t.Errorf("internet.lab from victim over tcp: %q", got)
		}
	})
}
