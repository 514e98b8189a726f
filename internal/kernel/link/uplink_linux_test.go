package link

import (
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// TestConvertAndRelease moves a configured NIC's addresses and routes to a
// bridge and back, checking with `ip` that the host stays reachable and
// that the namespace ends exactly as it began.
func TestConvertAndRelease(t *testing.T) {
	host, lan := nstest.New(t), nstest.New(t)
	nstest.Run(t, host, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "lan0", "netns", lan)
	for _, args := range [][]string{
		{"ip", "link", "set", "up0", "address", "02:00:00:00:09:02", "up"},
		{"ip", "addr", "add", "10.9.0.2/24", "dev", "up0"},
		{"ip", "addr", "add", "10.9.0.3/24", "dev", "up0", "valid_lft", "300", "preferred_lft", "200"},
		{"ip", "addr", "add", "2001:db8:9::2/64", "dev", "up0", "nodad"},
		{"ip", "route", "add", "default", "via", "10.9.0.1", "metric", "100"},
		{"ip", "route", "add", "10.50.0.0/16", "via", "10.9.0.1", "table", "100"},
		{"ip", "-6", "route", "add", "2001:db8:50::/48", "via", "2001:db8:9::1", "metric", "7"},
	} {
		nstest.Run(t, host, args...)
	}
	for _, args := range [][]string{
		{"ip", "link", "set", "lan0", "up"},
		{"ip", "addr", "add", "10.9.0.1/24", "dev", "lan0"},
		{"ip", "addr", "add", "2001:db8:9::1/64", "dev", "lan0", "nodad"},
	} {
		nstest.Run(t, lan, args...)
	}
	nstest.WaitDAD(t, host)
	before := nstest.Dump(t, host)

	ns, err := netns.GetFromName(host)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := New(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cfgs, err := h.HostConfigs()
	if err != nil {
		t.Fatal(err)
	}
	up := cfgs["up0"]
	if len(up.Addrs) != 3 || len(up.Routes) != 3 {
		t.Fatalf("up0's configuration: %+v; want 3 addresses and 3 routes", up)
	}
	if err := h.AddBridge("kv-up", 0, "kvmnet:network=up"); err != nil {
		t.Fatal(err)
	}
	if err := h.SetHWAddr("kv-up", "02:00:00:00:09:02"); err != nil {
		t.Fatal(err)
	}
	if err := h.SetUp("kv-up", true); err != nil {
		t.Fatal(err)
	}
	u := plan.Uplink{Bridge: "kv-up", Config: up, Move: "keep"}
	if err := h.Convert("up0", u); err != nil {
		t.Fatal(err)
	}
	br := nstest.Run(t, host, "ip", "addr", "show", "kv-up")
	for _, want := range []string{"link/ether 02:00:00:00:09:02", "inet 10.9.0.2/24 scope global kv-up", "inet 10.9.0.3/24 scope global secondary dynamic kv-up", "inet6 2001:db8:9::2/64"} {
		if !strings.Contains(br, want) {
			t.Errorf("kv-up lacks %q:\n%s", want, br)
		}
	}
	if s := nstest.Run(t, host, "ip", "addr", "show", "up0"); strings.Contains(s, "10.9.0.") || strings.Contains(s, "2001:db8") || !strings.Contains(s, "master kv-up") {
		t.Errorf("up0 after the conversion:\n%s", s)
	}
	routes := nstest.Run(t, host, "ip", "route", "show", "table", "all")
	for _, want := range []string{"default via 10.9.0.1 dev kv-up metric 100", "10.50.0.0/16 via 10.9.0.1 dev kv-up table 100", "2001:db8:50::/48 via 2001:db8:9::1 dev kv-up metric 7"} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes lack %q:\n%s", want, routes)
		}
	}
	for _, r := range strings.Split(routes, "\n") {
		if strings.Contains(r, "dev up0 ") && (strings.Contains(r, "10.") || strings.Contains(r, "2001:db8")) {
			t.Errorf("a route through up0 remains: %s", r)
		}
	}
	nstest.Run(t, lan, "ping", "-c1", "-W2", "10.9.0.2")
	nstest.Run(t, lan, "ping", "-c1", "-W2", "2001:db8:9::2")
	if nf, err := h.BridgeNF("kv-up"); err != nil || nf == "on" {
		t.Errorf("kv-up's bridge netfilter: %q, %v; want off or unsupported", nf, err)
	}

	if err := h.Release("up0", u); err != nil {
		t.Fatal(err)
	}
	if err := h.Delete("kv-up"); err != nil {
		t.Fatal(err)
	}
	nstest.WaitDAD(t, host)
	if after := nstest.Dump(t, host); after != before {
		t.Errorf("after release, the namespace differs:\n--- before\n%s\n--- after\n%s", before, after)
	}
	nstest.Run(t, lan, "ping", "-c1", "-W2", "10.9.0.2")
}
