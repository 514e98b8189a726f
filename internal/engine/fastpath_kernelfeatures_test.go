//go:build kernelfeatures

package engine

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// offloadWait bounds each wait of the fast-path test: under TCG a
// conntrack dump and a TCP window take far longer than on hardware.
const offloadWait = 120 * time.Second

// fastpathDoc has one guest, vm1 on dev, whose tap is a veth into the
// guest's namespace.
const fastpathDoc = `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0, fastpath: true}
vms:
  - name: vm1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", ip: 192.168.100.10, tap: vm1-0}]
`

// TestFastpathOffloadsNAT runs, in the Debian kernel, a TCP stream from a
// guest namespace through kvmnet's NAT to an "internet" namespace with
// fastpath: true: once established, the flow is offloaded to kvmnet's
// flowtable (conntrack shows [OFFLOAD], `kvmnet get networks` counts it),
// data keeps arriving after that, and a second plan is empty.
func TestFastpathOffloadsNAT(t *testing.T) {
	host := nstest.New(t)
	guest := nstest.New(t)
	inet := nstest.New(t)
	// host eth0 (172.30.0.2) <-> inet (172.30.0.1); host vm1-0 <-> guest eth0.
	nstest.Run(t, host, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "up0", "netns", inet)
	nstest.Run(t, host, "ip", "addr", "add", "172.30.0.2/24", "dev", "eth0")
	nstest.Run(t, host, "ip", "link", "set", "eth0", "up")
	nstest.Run(t, inet, "ip", "addr", "add", "172.30.0.1/24", "dev", "up0")
	nstest.Run(t, inet, "ip", "link", "set", "up0", "up")
	nstest.Run(t, host, "ip", "route", "add", "default", "via", "172.30.0.1")
	nstest.Run(t, host, "ip", "link", "add", "vm1-0", "type", "veth", "peer", "name", "eth0", "netns", guest)
	nstest.Run(t, guest, "ip", "link", "set", "eth0", "address", "52:54:00:00:00:10")
	nstest.Run(t, guest, "ip", "addr", "add", "192.168.100.10/24", "dev", "eth0")
	nstest.Run(t, guest, "ip", "link", "set", "eth0", "up")
	nstest.Run(t, guest, "ip", "route", "add", "default", "via", "192.168.100.1")

	// The internet host counts what it receives.
	var received atomic.Int64
	var ln net.Listener
	nstest.Do(t, inet, func() {
		var err error
		if ln, err = net.Listen("tcp", "172.30.0.1:5555"); err != nil {
			t.Error(err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()

	e, h := realEngine(t, host)
	ctx := context.Background()
	cfg, err := model.Parse("host.yaml", []byte(fastpathDoc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, cfg, []byte(fastpathDoc), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if p, err := e.Plan(ctx, cfg); err != nil || !p.Empty() {
		t.Fatalf("the second plan is not empty (%v):\n%s", err, p)
	}
	ft := nstest.Run(t, host, "nft", "list", "flowtables", "inet")
	if !strings.Contains(ft, "flowtable fastpath") || !strings.Contains(ft, "kv-dev") || !strings.Contains(ft, "eth0") {
		t.Fatalf("kvmnet's flowtable is not over kv-dev and eth0:\n%s", ft)
	}

	// The guest streams until the test ends.
	var conn net.Conn
	nstest.Do(t, guest, func() {
		d := net.Dialer{Timeout: offloadWait}
		if conn, err = d.Dial("tcp", "172.30.0.1:5555"); err != nil {
			t.Errorf("the guest connecting through NAT: %v", err)
		}
	})
	if conn == nil {
		t.FailNow()
	}
	defer conn.Close()
	go func() {
		buf := make([]byte, 16<<10)
		for {
			if _, err := conn.Write(buf); err != nil {
				return
			}
		}
	}()

	subnet := netip.MustParsePrefix("192.168.100.0/24")
	start := time.Now()
	waitFor(t, "the flow to be offloaded", func() bool {
		n, err := h.OffloadedFlows([]netip.Prefix{subnet})
		if err != nil {
			t.Fatal(err)
		}
		return n[subnet] > 0
	})
	// Checked with conntrack itself, not only with our reading of it.
	if out := nstest.Run(t, host, "conntrack", "-L", "-p", "tcp", "--dport", "5555"); !strings.Contains(out, "[OFFLOAD]") {
		t.Errorf("conntrack -L does not show the flow offloaded:\n%s", out)
	}
	status, err := e.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := status.Networks[0]; !n.Fastpath || n.Offloaded < 1 {
		t.Errorf("get networks: %+v, want fastpath and at least one offloaded flow", n)
	}
	// Data keeps arriving once the flowtable carries the flow.
	at, offloaded := received.Load(), time.Now()
	waitFor(t, "1 MB more to arrive after the offload", func() bool { return received.Load() > at+1<<20 })
	after, took := received.Load()-at, time.Since(offloaded)
	t.Logf("offloaded after %s (%d bytes sent by then); then %d bytes in %s (%.1f Mbit/s, TCG-emulated)",
		offloaded.Sub(start).Round(time.Millisecond), at, after, took.Round(time.Millisecond), float64(after)*8/took.Seconds()/1e6)
	if p, err := e.Plan(ctx, cfg); err != nil || !p.Empty() {
		t.Errorf("with the flow offloaded, a plan is not empty (%v):\n%s", err, p)
	}
	conn.Close()
	if _, err := e.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, failing the test after offloadWait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(offloadWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", offloadWait, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
