package link

import (
	"strconv"
	"strings"
	"testing"

	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// TestEthtoolStats: a veth's driver counters, as `ethtool -S` shows them
// (checked against the peer's index that `ip -o link` gives), and none
// for a bridge, whose driver has no such set.
func TestEthtoolStats(t *testing.T) {
	ns := nstest.New(t)
	nstest.Run(t, ns, "ip", "link", "add", "a0", "type", "veth", "peer", "name", "b0")
	nstest.Run(t, ns, "ip", "link", "add", "br-e", "type", "bridge")
	peer := strings.Fields(nstest.Run(t, ns, "ip", "-o", "link", "show", "b0"))[0]
	var st, br map[string]uint64
	nstest.Do(t, ns, func() {
		var err error
		if st, err = EthtoolStats("a0"); err != nil {
			t.Error(err)
		}
		if br, err = EthtoolStats("br-e"); err != nil {
			t.Error(err)
		}
	})
	if got := strconv.FormatUint(st["peer_ifindex"], 10) + ":"; got != peer {
		t.Errorf("a0 peer_ifindex %q, ip -o link says %q (all: %v)", got, peer, st)
	}
	if len(br) != 0 {
		t.Errorf("a bridge has driver counters: %v", br)
	}
}
