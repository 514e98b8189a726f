package probe

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// gatewayWorld is a host namespace whose default route goes through a
// gateway namespace on one veth pair. The gateway ignores pings unless
// told otherwise, so only ARP can prove it is there.
func gatewayWorld(t *testing.T) (host, gw string) {
	host, gw = nstest.New(t), nstest.New(t)
	nstest.Run(t, host, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", gw)
	nstest.Run(t, host, "ip", "addr", "add", "10.9.0.2/24", "dev", "eth0")
	nstest.Run(t, gw, "ip", "addr", "add", "10.9.0.1/24", "dev", "eth0")
	nstest.Run(t, host, "ip", "link", "set", "eth0", "up")
	nstest.Run(t, gw, "ip", "link", "set", "eth0", "up")
	nstest.Run(t, host, "ip", "route", "add", "default", "via", "10.9.0.1")
	nstest.Run(t, gw, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1")
	return host, gw
}

func probeIn(t *testing.T, ns string, timeout time.Duration) (what string, err error) {
	nstest.Do(t, ns, func() {
		what, err = Gateway(context.Background(), netip.MustParseAddr("10.9.0.1"), timeout)
	})
	return what, err
}

func TestGatewayAnswersARP(t *testing.T) {
	host, _ := gatewayWorld(t)
	what, err := probeIn(t, host, 5*time.Second)
	if err != nil || !strings.Contains(what, "ARP") {
		t.Fatalf("probe of a gateway that answers ARP only: %q, %v", what, err)
	}
}

func TestGatewayAnswersEcho(t *testing.T) {
	host, gw := gatewayWorld(t)
	nstest.Run(t, gw, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=0")
	// Its ARP answer may come first; either proves the gateway is there.
	if what, err := probeIn(t, host, 5*time.Second); err != nil || !strings.Contains(what, "answered") {
		t.Fatalf("probe of a gateway that answers pings: %q, %v", what, err)
	}
}

// TestGatewayStaleNeighbour: a neighbour entry learnt before the apply
// (REACHABLE for up to base_reachable_time, 30 s by default) must not pass
// for an answer when the gateway has gone.
func TestGatewayStaleNeighbour(t *testing.T) {
	host, gw := gatewayWorld(t)
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(nstest.Run(t, gw, "ip", "-j", "link", "show", "eth0")), &links); err != nil || len(links) != 1 {
		t.Fatalf("reading the gateway's MAC: %v", err)
	}
	nstest.Run(t, host, "ip", "neigh", "replace", "10.9.0.1", "lladdr", links[0].Address, "dev", "eth0", "nud", "reachable")
	// The gateway loses its address: nothing answers for 10.9.0.1 any
	// more, as after an apply that cut the host off from it.
	nstest.Run(t, gw, "ip", "addr", "flush", "dev", "eth0")
	if out := nstest.Run(t, host, "ip", "neigh", "show", "10.9.0.1"); !strings.Contains(out, "REACHABLE") {
		t.Fatalf("the stale entry is not REACHABLE, the test proves nothing: %s", out)
	}
	if what, err := probeIn(t, host, time.Second); err == nil {
		t.Fatalf("probe of a gone gateway with a REACHABLE neighbour entry succeeded: %s", what)
	} else if !strings.Contains(err.Error(), "no ICMP echo reply and no ARP answer") {
		t.Errorf("probe error: %v", err)
	}
}
