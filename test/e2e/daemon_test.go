//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// TestDaemonFollowsApplyAndLateTaps: with the daemon running, an apply goes
// through it and a new network is served at once; a tap that appears after
// the apply is adopted.
func TestDaemonFollowsApplyAndLateTaps(t *testing.T) {
	w := newWorld(t, natConfig)
	first := `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", ip: 192.168.100.10, tap: web1-0}]
`
	if err := os.WriteFile(w.file, []byte(first), 0o644); err != nil {
		t.Fatal(err)
	}
	w.mustKvmnet("apply", "-f", w.file)
	w.startDaemon()
	if ip := w.lease("web1"); ip.String() != "192.168.100.10" {
		t.Fatalf("web1 got %s", ip)
	}

	second := first + `
  - name: late
    interfaces: [{network: dev, mac: "52:54:00:00:00:99", tap: late-0}]
`
	second = strings.Replace(second, "vms:", `  - {name: test, mode: nat, subnet: 192.168.200.0/24, egress: eth0}
vms:
  - name: t1
    interfaces: [{network: test, mac: "52:54:00:00:00:20", tap: t1-0}]`, 1)
	if err := os.WriteFile(w.file, []byte(second), 0o644); err != nil {
		t.Fatal(err)
	}
	out := w.mustKvmnet("apply", "-f", w.file)
	if !strings.Contains(out, "waiting for tap late-0") {
		t.Errorf("apply through the daemon did not report the missing tap:\n%s", out)
	}
	// The new network is served without a restart.
	if ip := w.lease("t1"); !strings.HasPrefix(ip.String(), "192.168.200.") {
		t.Errorf("t1 on the network added while the daemon ran got %s", ip)
	}
	if vms := w.mustKvmnet("get", "vms"); !regexpLine(vms, "late", "waiting") {
		t.Errorf("get vms does not show late-0 waiting:\n%s", vms)
	}

	// libvirt creates the tap now.
	start := time.Now()
	w.mustExec("host", "ip", "link", "add", "late-0", "type", "veth", "peer", "name", "late-peer")
	w.waitFor("late-0 to be enslaved", 5*time.Second, func() bool {
		out, err := w.exec("host", "ip", "-j", "link", "show", "late-0")
		if err != nil {
			return false
		}
		var links []struct{ Master string }
		return json.Unmarshal([]byte(out), &links) == nil && len(links) == 1 && links[0].Master == "kv-dev"
	})
	t.Logf("late tap adopted %s after it appeared (poll granularity 50ms)", time.Since(start).Round(time.Millisecond))
	if vms := w.mustKvmnet("get", "vms"); !regexpLine(vms, "late", "attached") {
		t.Errorf("get vms does not show late-0 attached:\n%s", vms)
	}
}

// regexpLine reports whether a line of out contains all words.
func regexpLine(out string, words ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		ok := true
		for _, w := range words {
			if !strings.Contains(line, w) {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}
