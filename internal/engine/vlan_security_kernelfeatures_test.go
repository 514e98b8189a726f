//go:build kernelfeatures

package engine

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/kernel"
	"github.com/kvmnet/kvmnet/internal/store"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// drops reads port security's counter of reason for tap as kvmnet get
// ports does (Engine.Status, from the drop_REASON sets).
func drops(t *testing.T, e *Engine, tap, reason string) uint64 {
	t.Helper()
	st, err := e.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.VMs {
		if p.Tap == tap {
			return p.Drops[reason]
		}
	}
	t.Fatalf("no port %s in the status", tap)
	return 0
}

// TestVLANAccessPortSecurity applies vlanWorld with spoofguard on for g1,
// an access port of VLAN 10, bound to 10.10.0.1 by a lease in the store
// (what DHCP snooping records): its own traffic on VLAN 10 passes; frames
// from another source address, from a changed MAC, and 802.1Q-tagged
// frames of its own VLAN carrying an address not its own (which the
// bridge's VLAN filter lets in, and the IP and ARP checks would not see
// past the tag) are dropped, each counted under its reason.
func TestVLANAccessPortSecurity(t *testing.T) {
	w, _, e := vlanEngine(t)
	lease := store.Lease{Network: "lan", MAC: "52:54:00:00:10:01", IP: netip.MustParseAddr("10.10.0.1"), Expiry: time.Now().Add(time.Hour)}
	if err := e.Store.PutLease(lease); err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(vlanWorld, "tap: g1-0, vlan: 10, security: {spoofguard: false}}", "tap: g1-0, vlan: 10}", 1)
	if err := applyVLANDoc(t, e, doc); err != nil {
		t.Fatal(err)
	}
	g1 := w.g["g1"]
	t.Logf("table bridge kvmnet:\n%s", nstest.Run(t, w.host, "nft", "list", "table", "bridge", "kvmnet"))

	// Its own traffic, on its VLAN.
	for _, to := range []string{"10.10.0.254", "10.10.0.2"} {
		if !pings(g1, to) {
			t.Fatalf("g1 (spoofguard on, its bound address) does not reach %s on VLAN 10", to)
		}
	}

	// Another source address: g1's neighbour entry for the LAN is fresh
	// from the ping above, so no ARP goes out, only the IP packet.
	nstest.Run(t, g1, "ip", "addr", "add", "10.10.0.9/24", "dev", "eth0")
	before := drops(t, e, "g1-0", "ip")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if nstest.Command(ctx, g1, "ping", "-c", "1", "-w", "3", "-W", "1", "-I", "10.10.0.9", "10.10.0.254").Run() == nil {
		t.Error("g1 reached the LAN from 10.10.0.9, an address not bound to it")
	}
	if after := drops(t, e, "g1-0", "ip"); after <= before {
		t.Errorf("drops for ip on g1-0: %d before, %d after; want more", before, after)
	}
	nstest.Run(t, g1, "ip", "addr", "del", "10.10.0.9/24", "dev", "eth0")

	// A changed MAC (the link goes down to change it, which empties its
	// neighbour table: the ARP request is what is dropped first).
	setMAC := func(mac string) {
		nstest.Run(t, g1, "ip", "link", "set", "eth0", "down")
		nstest.Run(t, g1, "ip", "link", "set", "eth0", "address", mac)
		nstest.Run(t, g1, "ip", "link", "set", "eth0", "up")
	}
	before = drops(t, e, "g1-0", "mac")
	setMAC("52:54:00:00:10:99")
	if pings(g1, "10.10.0.254") {
		t.Error("g1 reached the LAN from a MAC not its own")
	}
	if after := drops(t, e, "g1-0", "mac"); after <= before {
		t.Errorf("drops for mac on g1-0: %d before, %d after; want more", before, after)
	}
	setMAC("52:54:00:00:10:01")
	if !pings(g1, "10.10.0.254") {
		t.Fatal("g1 does not reach the LAN again with its own MAC")
	}

	// Tagged frames of its own VLAN: the bridge would take VID 10 from
	// this port, and the LAN would answer an ARP for an unbound address
	// if the frame got through.
	nstest.Run(t, g1, "ip", "addr", "flush", "dev", "eth0")
	nstest.Run(t, g1, "ip", "link", "add", "link", "eth0", "name", "eth0.10", "type", "vlan", "id", "10")
	nstest.Run(t, g1, "ip", "link", "set", "eth0.10", "up")
	nstest.Run(t, g1, "ip", "addr", "add", "10.10.0.9/24", "dev", "eth0.10")
	// The LAN's answers could not come back to eth0.10 (the access port
	// sends them untagged): whether g1's tagged frames get through shows
	// on the LAN's side of the uplink.
	const spoofed = "vlan 10 and arp and host 10.10.0.9"
	before = drops(t, e, "g1-0", "vlan")
	if got := capture(t, w.lan, "lan0", spoofed, func() { pings(g1, "10.10.0.254") }); got != "" {
		t.Errorf("g1's tagged frames from 10.10.0.9, an address not bound to it, reached the LAN:\n%s", got)
	}
	if after := drops(t, e, "g1-0", "vlan"); after <= before {
		t.Errorf("drops for vlan on g1-0: %d before, %d after; want more", before, after)
	}
	st, err := e.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.VMs {
		if p.Tap == "g1-0" {
			t.Logf("g1-0's drops: %v", p.Drops)
		}
	}

	// The control: without that rule the same tagged frames pass every
	// other check and reach the LAN. The next reconcile puts it back.
	var handle string
	for _, l := range strings.Split(nstest.Run(t, w.host, "nft", "-a", "list", "chain", "bridge", "kvmnet", "ports"), "\n") {
		if _, h, ok := strings.Cut(l, `comment "vlan" # handle `); ok {
			handle = strings.TrimSpace(h)
		}
	}
	if handle == "" {
		t.Fatal("no rule with comment vlan in chain ports")
	}
	nstest.Run(t, w.host, "nft", "delete", "rule", "bridge", "kvmnet", "ports", "handle", handle)
	got := capture(t, w.lan, "lan0", spoofed, func() { pings(g1, "10.10.0.254") })
	t.Logf("without the vlan rule, on the LAN:\n%s", got)
	if got == "" {
		t.Error("without the vlan rule, g1's tagged frames from an unbound address do not reach the LAN either; the test proves nothing")
	}
	p, err := e.Converge(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the reconcile repaired:\n%s", p)
	if got := capture(t, w.lan, "lan0", spoofed, func() { pings(g1, "10.10.0.254") }); got != "" {
		t.Errorf("after the reconcile g1's tagged frames reach the LAN again:\n%s", got)
	}
}

// TestEgressVLANTraffic: a nat network leaving through eth0.200, which
// kvmnet makes with egressVlan: 200 on the uplink eth0, whose other end
// is a router's namespace with its own VLAN 200 link. A guest on the nat
// network reaches the router's address through kvmnet's masquerade: the
// router sees the host's address on VLAN 200, and the frames on the
// wire carry tag 200 (tcpdump -e on the router's side).
func TestEgressVLANTraffic(t *testing.T) {
	hostNS, router, guest := nstest.New(t), nstest.New(t), nstest.New(t)
	run := func(ns string, args ...string) { nstest.Run(t, ns, args...) }
	nstest.Veth(t, hostNS, "eth0", router, "lan0")
	nstest.VLAN(t, router, "lan0", 200, "198.51.100.1/24")
	// The guest: its eth0 is the peer of its "tap" web1-0 in the host.
	nstest.Veth(t, hostNS, "web1-0", guest, "eth0")
	run(guest, "ip", "link", "set", "eth0", "address", "52:54:00:00:00:10")
	run(guest, "ip", "addr", "add", "192.168.100.10/24", "dev", "eth0")
	run(guest, "ip", "route", "add", "default", "via", "192.168.100.1")

	nstest.Enter(t, hostNS)
	host, err := kernel.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(host.Close)
	e := fakeEngine(t, host)
	const doc = `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0, egressVlan: 200}
vms:
  - {name: web1, interfaces: [{network: dev, mac: "52:54:00:00:00:10", ip: 192.168.100.10, tap: web1-0}]}
`
	if err := applyVLANDoc(t, e, doc); err != nil {
		t.Fatal(err)
	}
	out := nstest.Run(t, hostNS, "ip", "-d", "link", "show", "eth0.200")
	if !strings.Contains(out, "vlan protocol 802.1Q id 200") {
		t.Fatalf("eth0.200 is not VLAN 200 of eth0:\n%s", out)
	}
	// kvmnet makes eth0.200 and brings it up; its address and routes are
	// the host's business, as on any egress, so the test gives them.
	run(hostNS, "ip", "addr", "add", "198.51.100.2/24", "dev", "eth0.200")

	if !pings(guest, "198.51.100.1") {
		t.Fatalf("the guest does not reach the router through eth0.200\nnft:\n%s", nstest.Run(t, hostNS, "nft", "list", "ruleset"))
	}
	got := capture(t, router, "lan0", "vlan and icmp", func() { pings(guest, "198.51.100.1") })
	if !strings.Contains(got, "vlan 200,") {
		t.Errorf("the guest's echo request on the wire does not carry VLAN 200:\n%s", got)
	}
	if !strings.Contains(got, "198.51.100.2 > 198.51.100.1") {
		t.Errorf("the guest's echo request is not masqueraded to the host's address on eth0.200:\n%s", got)
	}
}
