package dhcp

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/store"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// udhcpcScript records what udhcpc was given into $KVT_OUT and configures
// nothing: the guest namespace needs no address for the test, and the
// host's /etc/resolv.conf must never be touched.
const udhcpcScript = `#!/bin/sh
case "$1" in
bound|renew)
	{
		echo "ip=$ip"
		echo "subnet=$subnet"
		echo "router=$router"
		echo "dns=$dns"
		echo "domain=$domain"
		echo "lease=$lease"
		echo "mtu=$mtu"
		echo "hostname=$hostname"
		echo "serverid=$serverid"
	} >"$KVT_OUT.tmp" && mv "$KVT_OUT.tmp" "$KVT_OUT"
	;;
esac
exit 0
`

// kernelWorld is a host namespace with bridge kvbr0 (10.99.0.1/24) where the
// server runs, and guest namespaces whose eth0 is a veth on that bridge.
type kernelWorld struct {
	t      *testing.T
	host   string
	script string
	dir    string
	guests int
	runs   int
}

func newKernelWorld(t *testing.T) *kernelWorld {
	nstest.RequireRoot(t)
	if _, err := exec.LookPath("udhcpc"); err != nil {
		t.Skip("skipping: udhcpc not found in PATH (Debian package udhcpc)")
	}
	w := &kernelWorld{t: t, host: nstest.New(t), dir: t.TempDir()}
	w.script = filepath.Join(w.dir, "udhcpc.sh")
	if err := os.WriteFile(w.script, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	w.bridge("kvbr0", "10.99.0.1/24")
	return w
}

func (w *kernelWorld) bridge(name, addr string) {
	nstest.Run(w.t, w.host, "ip", "link", "add", name, "type", "bridge")
	nstest.Run(w.t, w.host, "ip", "addr", "add", addr, "dev", name)
	nstest.Run(w.t, w.host, "ip", "link", "set", name, "up")
}

// guest creates a guest namespace whose eth0 (with mac) is plugged into
// bridge br of the host namespace.
func (w *kernelWorld) guest(mac, br string) string {
	w.guests++
	g := nstest.New(w.t)
	port := fmt.Sprintf("kvg%d", w.guests)
	nstest.Run(w.t, w.host, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "address", mac, "netns", g)
	nstest.Run(w.t, w.host, "ip", "link", "set", port, "master", br, "up")
	nstest.Run(w.t, g, "ip", "link", "set", "eth0", "up")
	return g
}

// startServer starts a server for kvbr0 inside the host namespace: the
// socket is created on a thread that entered it.
func (w *kernelWorld) startServer(leases LeaseStore) *Server {
	w.t.Helper()
	cfg := Config{
		Network:    "test",
		Interface:  "kvbr0",
		ServerIP:   netip.MustParseAddr("10.99.0.1"),
		Subnet:     netip.MustParsePrefix("10.99.0.0/24"),
		RangeStart: netip.MustParseAddr("10.99.0.100"),
		RangeEnd:   netip.MustParseAddr("10.99.0.110"),
		LeaseTime:  time.Hour,
		Router:     netip.MustParseAddr("10.99.0.1"),
		DNS:        []netip.Addr{netip.MustParseAddr("10.99.0.1")},
		Domain:     "test.kvm",
		MTU:        1400,
		Reservations: []Reservation{
			{MAC: "52:54:00:99:00:10", IP: netip.MustParseAddr("10.99.0.10"), Hostname: "web1"},
		},
	}
	log := slog.New(slog.NewTextHandler(w.t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg, leases, log)
	if err != nil {
		w.t.Fatal(err)
	}
	var startErr error
	nstest.Do(w.t, w.host, func() { startErr = s.Start() })
	if startErr != nil {
		w.t.Fatal(startErr)
	}
	w.t.Cleanup(func() { s.Close() })
	return s
}

// udhcpc runs udhcpc once in guest namespace g and returns what its script
// recorded, or nil when it got no lease.
func (w *kernelWorld) udhcpc(g string, tries int) map[string]string {
	w.t.Helper()
	w.runs++
	out := filepath.Join(w.dir, fmt.Sprintf("lease%d", w.runs))
	// The deadline is a safety net; udhcpc gives up by itself after
	// tries one-second attempts (-n).
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := nstest.Command(ctx, g, "udhcpc", "-f", "-q", "-n", "-i", "eth0", "-s", w.script,
		"-t", fmt.Sprint(tries), "-T", "1", "-A", "1")
	cmd.Env = append(cmd.Env, "KVT_OUT="+out)
	log, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		w.t.Fatalf("udhcpc in %s did not finish: %s", g, log)
	}
	f, ferr := os.Open(out)
	if ferr != nil {
		if err == nil {
			w.t.Fatalf("udhcpc in %s succeeded but its script recorded nothing: %s", g, log)
		}
		w.t.Logf("udhcpc in %s: %v: %s", g, err, strings.TrimSpace(string(log)))
		return nil
	}
	defer f.Close()
	got := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		got[k] = v
	}
	return got
}

func (w *kernelWorld) wantIP(g, ip string) map[string]string {
	w.t.Helper()
	got := w.udhcpc(g, 10)
	if got == nil {
		w.t.Fatalf("no lease in %s, want %s", g, ip)
	}
	if got["ip"] != ip {
		w.t.Fatalf("lease in %s is %q, want %s", g, got["ip"], ip)
	}
	return got
}

func TestKernelUdhcpc(t *testing.T) {
	w := newKernelWorld(t)
	const (
		macRes = "52:54:00:99:00:10"
		macA   = "52:54:00:99:00:0a"
		macB   = "52:54:00:99:00:0b"
	)
	gRes, gA, gB := w.guest(macRes, "kvbr0"), w.guest(macA, "kvbr0"), w.guest(macB, "kvbr0")

	dbPath := filepath.Join(t.TempDir(), store.File)
	st, err := store.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	srv := w.startServer(st)

	got := w.wantIP(gRes, "10.99.0.10")
	want := map[string]string{
		"ip": "10.99.0.10", "subnet": "255.255.255.0", "router": "10.99.0.1",
		"dns": "10.99.0.1", "domain": "test.kvm", "lease": "3600", "mtu": "1400",
		"hostname": "web1", "serverid": "10.99.0.1",
	}
	for k, v := range want {
		if strings.TrimSpace(got[k]) != v {
			t.Errorf("udhcpc got %s=%q, want %q", k, got[k], v)
		}
	}
	w.wantIP(gA, "10.99.0.100")
	if p := srv.Pool(); p.Size != 11 || p.Used != 1 || p.Free != 10 {
		t.Errorf("Pool() = %+v, want size 11, used 1", p)
	}

	// Restart with the same database, reopened as a new daemon would. A
	// newcomer asking first must get neither address.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = store.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv = w.startServer(st)
	if n := len(srv.Leases()); n != 2 {
		t.Errorf("restarted server loaded %d leases, want 2", n)
	}
	w.wantIP(gB, "10.99.0.101")
	w.wantIP(gA, "10.99.0.100")
	w.wantIP(gRes, "10.99.0.10")
}

// TestKernelBoundToBridge checks the server does not answer on another
// interface of its namespace (as it must not on the uplink).
func TestKernelBoundToBridge(t *testing.T) {
	w := newKernelWorld(t)
	w.bridge("kvbr1", "10.98.0.1/24")
	g := w.guest("52:54:00:98:00:01", "kvbr1")
	w.startServer(newMemStore())
	if got := w.udhcpc(g, 2); got != nil {
		t.Fatalf("guest on another bridge got a lease: %v", got)
	}
}
