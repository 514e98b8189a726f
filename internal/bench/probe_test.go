package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"
)

// TestProbe runs the echo server and the probe across a veth pair between
// two namespaces of its own (root only).
func TestProbe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	ctx := context.Background()
	a, z := fmt.Sprintf("kbt%d-a", os.Getpid()), fmt.Sprintf("kbt%d-z", os.Getpid())
	for _, ns := range []string{a, z} {
		if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { run(context.Background(), "ip", "netns", "del", ns) })
	}
	if err := ipCmds(ctx,
		[]string{"link", "add", "eth0", "netns", a, "type", "veth", "peer", "name", "eth0", "netns", z},
		[]string{"-n", a, "addr", "add", "10.250.0.1/24", "dev", "eth0"},
		[]string{"-n", z, "addr", "add", "10.250.0.2/24", "dev", "eth0"},
		[]string{"-n", a, "link", "set", "eth0", "up"},
		[]string{"-n", z, "link", "set", "eth0", "up"},
	); err != nil {
		t.Fatal(err)
	}
	e, err := StartEcho(z, echoPort)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	lat, err := Probe(ctx, a, netip.MustParseAddrPort("10.250.0.2:7007"), ProbeOptions{Count: 200, Warmup: 10})
	if err != nil {
		t.Fatal(err)
	}
	if lat.Sent != 200 || lat.Lost != 0 || len(lat.RTTs) != 200 || lat.P50 <= 0 || lat.P99 < lat.P50 {
		t.Errorf("probe = sent %d lost %d, %d RTTs, p50 %.1f µs, p99 %.1f µs", lat.Sent, lat.Lost, len(lat.RTTs), lat.P50, lat.P99)
	}
	t.Logf("veth round trip: p50 %.1f µs, p99 %.1f µs", lat.P50, lat.P99)

	// Nothing listens on another port: every probe is lost, fast (the
	// kernel answers port unreachable), and that is an error.
	start := time.Now()
	if _, err := Probe(ctx, a, netip.MustParseAddrPort("10.250.0.2:7008"), ProbeOptions{Count: 3, Timeout: 100 * time.Millisecond}); err == nil {
		t.Errorf("probing a closed port succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("probing a closed port took %s", d)
	}
	// TCP to the echo port gets through at once; to a closed port it
	// does not, and WaitTCP gives up when told.
	if n, _, err := WaitTCP(ctx, a, netip.MustParseAddrPort("10.250.0.2:7007"), 5*time.Second); err != nil || n != 1 {
		t.Errorf("WaitTCP to the echo port: %d attempts, %v", n, err)
	}
	if n, took, err := WaitTCP(ctx, a, netip.MustParseAddrPort("10.250.0.2:7008"), 500*time.Millisecond); err == nil || n < 2 || took > 3*time.Second {
		t.Errorf("WaitTCP to a closed port: %d attempts in %s, %v; want an error after several", n, took, err)
	}
	// A namespace that does not exist is an error, not a hang.
	if _, err := StartEcho("kbt-no-such-namespace", echoPort); err == nil {
		t.Errorf("StartEcho in a missing namespace succeeded")
	}
}
