package link

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// TestTapsAndBridges checks each verb with `ip -d`, an independent tool.
func TestTapsAndBridges(t *testing.T) {
	ns := nstest.New(t)
	nstest.Enter(t, ns) // taps are made by ioctl in the calling thread's namespace
	h, err := New(netns.None())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	if err := h.AddBridge("kv-t", 1400, "kvmnet:network=t"); err != nil {
		t.Fatal(err)
	}
	if err := h.AddTap("t-mq", TapOptions{Queues: 4, Owner: "nobody", VnetHdr: true}, "kvmnet:tap=t"); err != nil {
		t.Fatal(err)
	}
	if err := h.AddTap("t-one", TapOptions{VnetHdr: true}, ""); err != nil {
		t.Fatal(err)
	}
	for _, step := range []error{
		h.SetMaster("t-mq", "kv-t"),
		h.SetUp("kv-t", true),
		h.AddAddr("kv-t", netip.MustParsePrefix("10.7.0.1/24")),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	mq := nstest.Run(t, ns, "ip", "-d", "link", "show", "t-mq")
	for _, want := range []string{"tun type tap", "vnet_hdr on", "persist on", "multi_queue", "user nobody", "master kv-t", "alias kvmnet:tap=t"} {
		if !strings.Contains(mq, want) {
			t.Errorf("t-mq lacks %q:\n%s", want, mq)
		}
	}
	if one := nstest.Run(t, ns, "ip", "-d", "link", "show", "t-one"); strings.Contains(one, "multi_queue") || !strings.Contains(one, "vnet_hdr on") {
		t.Errorf("t-one:\n%s", one)
	}
	br := nstest.Run(t, ns, "ip", "-d", "addr", "show", "kv-t")
	for _, want := range []string{"mtu 1400", "alias kvmnet:network=t", "inet 10.7.0.1/24 brd 10.7.0.255"} {
		if !strings.Contains(br, want) {
			t.Errorf("kv-t lacks %q:\n%s", want, br)
		}
	}

	links, err := h.List()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Link{}
	for _, l := range links {
		byName[l.Name] = l
	}
	if l := byName["t-mq"]; l.Master != "kv-t" || l.Kind != "tuntap" || l.Alias != "kvmnet:tap=t" {
		t.Errorf("List t-mq: %+v", l)
	}
	if l := byName["kv-t"]; !l.Up || len(l.Addrs) != 1 || l.Addrs[0] != netip.MustParsePrefix("10.7.0.1/24") {
		t.Errorf("List kv-t: %+v", l)
	}

	for i, err := range h.DeleteAll([]string{"t-mq", "t-one", "kv-t", "missing"}) {
		if i < 3 && err != nil {
			t.Error(err)
		}
		if i == 3 && (err == nil || !IsNotFound(err)) {
			t.Errorf("deleting a missing link: %v, want not found", err)
		}
	}
	if out := nstest.Run(t, ns, "ip", "-o", "link"); strings.Contains(out, "t-mq") || strings.Contains(out, "kv-t") {
		t.Errorf("links left:\n%s", out)
	}
}

// TestTapRefusesOtherNamespace: creating a tap from a thread outside the
// handle's namespace would put it in the wrong one; it is refused.
func TestTapRefusesOtherNamespace(t *testing.T) {
	ns := nstest.New(t)
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lh, err := New(h)
	if err != nil {
		t.Fatal(err)
	}
	defer lh.Close()
	if err := lh.AddTap("wrong-ns", TapOptions{}, ""); err == nil || !strings.Contains(err.Error(), "not in the handle's network namespace") {
		t.Fatalf("got %v", err)
	}
}
