//go:build e2e

package e2e

import (
	"maps"
	"os"
	"strings"
	"testing"
	"time"
)

// ctKeys are the conntrack sysctls the test sets or tries to.
var ctKeys = []string{
	"net.netfilter.nf_conntrack_tcp_timeout_established",
	"net.netfilter.nf_conntrack_udp_timeout",
	"net.netfilter.nf_conntrack_max",
}

// TestConntrackSizing: host: conntrack: timeouts are set in the lab
// host's namespace, repaired by the daemon when reset behind its back,
// and given back by destroy; max, read-only outside the initial
// namespace on this kernel, is refused at its key with nothing changed.
func TestConntrackSizing(t *testing.T) {
	w := newWorld(t, natConfig)
	read := func() map[string]string {
		got := map[string]string{}
		for _, k := range ctKeys {
			out := w.mustExec("host", "sysctl", "-n", k)
			got[k] = strings.TrimSpace(out)
		}
		return got
	}
	before := read()
	dumps := w.dumps()

	// max: auto cannot be applied in a namespace of this kernel.
	withMax := "host:\n  conntrack: {max: auto, timeouts: {udp: 20s}}\n" + natConfig
	if err := os.WriteFile(w.file, []byte(withMax), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := w.kvmnet("apply", "-f", w.file)
	if err == nil || !strings.Contains(out, "host.yaml:2:20: host.conntrack.max: net.netfilter.nf_conntrack_max is read-only where kvmnet runs") {
		t.Fatalf("max: auto in a namespace: err %v, output:\n%s", err, out)
	}
	t.Logf("refused: %s", out)
	if got := read(); !maps.Equal(got, before) {
		t.Errorf("a refused apply changed sysctls: %v, was %v", got, before)
	}
	compareDumps(t, "a refused apply", dumps, w.dumps())

	// Timeouts are the namespace's own: applied, and 2h5m by default.
	timeouts := "host:\n  conntrack: {timeouts: {udp: 20s}}\n" + natConfig
	if err := os.WriteFile(w.file, []byte(timeouts), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := w.mustKvmnet("plan", "-f", w.file); !strings.Contains(out, "sysctl -w net.netfilter.nf_conntrack_udp_timeout=20\n") ||
		!strings.Contains(out, "sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=7500\n") {
		t.Errorf("plan does not set the timeouts:\n%s", out)
	}
	w.mustKvmnet("apply", "-f", w.file)
	got := read()
	if got[ctKeys[0]] != "7500" || got[ctKeys[1]] != "20" || got[ctKeys[2]] != before[ctKeys[2]] {
		t.Errorf("after apply: %v", got)
	}
	if out := w.mustKvmnet("plan", "-f", w.file); out != "no changes\n" {
		t.Errorf("second plan:\n%s", out)
	}

	// The daemon puts a reset timeout back (sysctls have no event: read
	// every second).
	w.startDaemon()
	w.mustExec("host", "sysctl", "-w", "net.netfilter.nf_conntrack_udp_timeout=30")
	start := time.Now()
	w.waitFor("udp timeout to be repaired", 3*time.Second, func() bool {
		out, _ := w.exec("host", "sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout")
		return strings.TrimSpace(out) == "20"
	})
	t.Logf("udp timeout repaired after %s", time.Since(start).Round(time.Millisecond))
	w.stopDaemon()

	w.mustKvmnet("destroy")
	if got := read(); !maps.Equal(got, before) {
		t.Errorf("after destroy: %v, want %v", got, before)
	}
}
