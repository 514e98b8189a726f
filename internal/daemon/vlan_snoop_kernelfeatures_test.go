//go:build kernelfeatures

package daemon

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/kernel"
	"github.com/kvmnet/kvmnet/internal/lab"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/store"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// daemonDirEnv names the state directory of the daemon TestDaemonProcess
// runs; TestVLANSnoopedLease sets it.
const daemonDirEnv = "KVMNET_TEST_DAEMON_DIR"

// snoopHost: a VLAN-aware bridge whose uplink eth0 reaches the LAN, and g1
// on an access port of VLAN 10 with spoofguard on (the default).
const snoopHost = `
networks:
  - {name: lan, mode: bridged, bridge: br0, uplink: eth0, vlans: true}
vms:
  - {name: g1, interfaces: [{network: lan, mac: "52:54:00:00:10:01", tap: g1-0, vlan: 10}]}
`

// snoopScript is udhcpc's script: it puts the address it is given on the
// interface and writes it to $KVT_OUT; nothing else (never the machine's
// /etc/resolv.conf).
const snoopScript = `#!/bin/sh
case "$1" in
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	echo "$ip" >"$KVT_OUT.tmp" && mv "$KVT_OUT.tmp" "$KVT_OUT"
	;;
esac
exit 0
`

// TestDaemonProcess is the daemon of TestVLANSnoopedLease, which runs this
// test binary again under ip netns exec: kvmnet's daemon runs inside its
// namespace as a whole process (the kernel backends refuse to work from a
// thread in another namespace), as kvmnet daemon --netns does. It applies
// snoopHost, then serves until SIGTERM.
func TestDaemonProcess(t *testing.T) {
	dir := os.Getenv(daemonDirEnv)
	if dir == "" {
		t.Skip("run by TestVLANSnoopedLease")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := store.Open(filepath.Join(dir, store.File))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	host, err := kernel.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	e := &engine.Engine{Store: st, Kernel: host, Log: log, Journal: filepath.Join(dir, "journal")}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	cfg, err := model.Parse("host.yaml", []byte(snoopHost))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, cfg, []byte(snoopHost), engine.ApplyOptions{AllowRemoval: true}); err != nil {
		t.Fatal(err)
	}
	err = Run(ctx, Options{Engine: e, Socket: filepath.Join(dir, "kvmnet.sock"), Resync: time.Second, Events: host, Log: log})
	if err != nil && ctx.Err() == nil {
		t.Fatal(err)
	}
}

// TestVLANSnoopedLease, in Debian's kernel: the LAN's DHCP server
// (dnsmasq) serves VLAN 10 of the switch's trunk; g1, a spoofguard guest
// on an access port of VLAN 10, leases from it through the VLAN-aware
// bridge; kvmnet's daemon snoops the reply leaving g1's port and binds
// the address (sg_ip4), which then passes the IP check: g1 reaches the
// server from it.
func TestVLANSnoopedLease(t *testing.T) {
	for _, tool := range []string{"dnsmasq", "udhcpc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not found in PATH", tool)
		}
	}
	hostNS, lan, g1 := nstest.New(t), nstest.New(t), nstest.New(t)
	run := func(ns string, args ...string) string { return nstest.Run(t, ns, args...) }
	nstest.Veth(t, hostNS, "eth0", lan, "lan0")
	run(hostNS, "ip", "addr", "add", "172.30.0.2/24", "dev", "eth0")
	run(lan, "ip", "addr", "add", "172.30.0.1/24", "dev", "lan0")
	nstest.VLAN(t, lan, "lan0", 10, "10.10.0.254/24")
	nstest.Veth(t, hostNS, "g1-0", g1, "eth0")
	run(g1, "ip", "link", "set", "eth0", "address", "52:54:00:00:10:01")

	dir := t.TempDir()
	var dnsLog, daemonLog strings.Builder
	// Registered first, so it runs after both are stopped.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon:\n%s\ndnsmasq:\n%s", daemonLog.String(), dnsLog.String())
		}
	})
	dnsmasq := nstest.Command(context.Background(), lan, "dnsmasq", "--keep-in-foreground", "--pid-file", "--conf-file=/dev/null",
		"--no-resolv", "--no-hosts", "--port=0", "--bind-interfaces", "--interface=lan0.10",
		"--dhcp-range=10.10.0.100,10.10.0.150,1h", "--dhcp-authoritative", "--no-ping",
		"--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"), "--log-facility=-", "--log-dhcp")
	dnsmasq.Stdout, dnsmasq.Stderr = &dnsLog, &dnsLog
	startStopped(t, dnsmasq, "dnsmasq", os.Kill)

	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	d := exec.Command("ip", "netns", "exec", hostNS, os.Args[0], "-test.run=^TestDaemonProcess$", "-test.v")
	d.Env = append(os.Environ(), daemonDirEnv+"="+state)
	// The guest asks for its lease once the daemon snoops: a lease taken
	// before is bound only when the guest renews it.
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d.Stdout, d.Stderr = wr, wr
	snooping, logged := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(logged)
		sc := bufio.NewScanner(r)
		for seen := false; sc.Scan(); {
			daemonLog.WriteString(sc.Text() + "\n")
			if !seen && strings.Contains(sc.Text(), "snooping the LAN's DHCP replies") {
				seen = true
				close(snooping)
			}
		}
	}()
	// Cleanups run last first: the daemon stops, then its log is all in
	// (the pipe's write end closed here too, should it fail to start).
	t.Cleanup(func() {
		wr.Close()
		<-logged
	})
	startStopped(t, d, "the daemon", syscall.SIGTERM)
	wr.Close()
	select {
	case <-snooping:
	case <-logged:
		t.Fatal("the daemon ended before it snooped")
	case <-time.After(2 * time.Minute):
		t.Fatal("the daemon does not snoop after 2m")
	}

	script := filepath.Join(dir, "udhcpc.sh")
	if err := os.WriteFile(script, []byte(snoopScript), 0o755); err != nil {
		t.Fatal(err)
	}
	leased := filepath.Join(dir, "leased")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dhcp := nstest.Command(ctx, g1, "udhcpc", "-f", "-q", "-n", "-i", "eth0", "-s", script, "-t", "10", "-T", "3")
	dhcp.Env = append(os.Environ(), "KVT_OUT="+leased)
	if out, err := dhcp.CombinedOutput(); err != nil {
		t.Fatalf("udhcpc in g1: %v\n%s", err, out)
	}
	b, err := os.ReadFile(leased)
	if err != nil {
		t.Fatal(err)
	}
	ip := strings.TrimSpace(string(b))
	t.Logf("g1 leased %s from the LAN's server on VLAN 10", ip)

	waitFor(t, time.Minute, "g1-0 . "+ip+" in sg_ip4", func() bool {
		out, _ := nstest.Command(context.Background(), hostNS, "nft", "list", "set", "bridge", "kvmnet", "sg_ip4").CombinedOutput()
		return strings.Contains(string(out), fmt.Sprintf(`"g1-0" . %s`, ip))
	})
	waitFor(t, 30*time.Second, "g1 to reach 10.10.0.254 from "+ip, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return nstest.Command(ctx, g1, "ping", "-c", "1", "-W", "1", "10.10.0.254").Run() == nil
	})
	out := run(hostNS, "nft", "list", "set", "bridge", "kvmnet", "drop_ip")
	t.Logf("drop_ip after the lease:\n%s", out)
}

// startStopped starts cmd and, at cleanup, sends it sig by its pid and
// waits for it.
func startStopped(t *testing.T, cmd *exec.Cmd, what string, sig os.Signal) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", what, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(sig)
		_ = cmd.Wait()
	})
}

// waitFor waits, up to d, until cond holds (lab.Poll, every 100 ms).
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	err := lab.Poll(context.Background(), what, d, 100*time.Millisecond, func() error {
		if cond() {
			return nil
		}
		return lab.ErrNotYet
	})
	if err != nil {
		t.Fatal(err)
	}
}
