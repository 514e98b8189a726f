//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestExhaustedPool: a pool of one address and two guests. The second gets
// nothing, the daemon keeps serving, and get leases says why.
func TestExhaustedPool(t *testing.T) {
	w := newWorld(t, `
networks:
  - {name: tiny, mode: nat, subnet: 10.50.0.0/24, egress: eth0, dhcp: {range: 10.50.0.100-10.50.0.100}}
vms:
  - name: a1
    interfaces: [{network: tiny, mac: "52:54:00:00:50:01", tap: a1-0}]
  - name: a2
    interfaces: [{network: tiny, mac: "52:54:00:00:50:02", tap: a2-0}]
`)
	w.mustKvmnet("apply", "-f", w.file)
	w.startDaemon()
	if ip := w.lease("a1"); ip.String() != "10.50.0.100" {
		t.Fatalf("a1 got %s", ip)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if l, err := w.lab.DHCP(ctx, "a2", "eth0"); err == nil {
		t.Fatalf("a2 got %s from an exhausted pool", l.IP)
	}
	out := w.mustKvmnet("get", "leases")
	if !strings.Contains(out, "pool tiny: 1 addresses, 1 used, 0 free") || !strings.Contains(out, "EXHAUSTED") {
		t.Errorf("get leases does not show the exhausted pool:\n%s", out)
	}
	// Still serving: a1 renews.
	if ip := w.lease("a1"); ip.String() != "10.50.0.100" {
		t.Errorf("a1 after exhaustion got %s", ip)
	}
}
