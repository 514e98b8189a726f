//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestBaseline: a baseline saved through the daemon, then port security
// drops made by a guest sending from an address it was not given; the
// diff (with no daemon: from the store) reports them as a regression of
// its tap and exits 1; before them it exits 0.
func TestBaseline(t *testing.T) {
	w := newWorld(t, natConfig)
	w.mustKvmnet("apply", "-f", w.file)
	w.startDaemon()
	out := w.mustKvmnet("baseline", "save", "q1")
	if !strings.HasPrefix(out, "saved baseline q1: ") {
		t.Errorf("save: %s", out)
	}
	t.Logf("%s", out)
	if out := w.mustKvmnet("baseline", "ls"); out != "q1\n" {
		t.Errorf("ls: %q", out)
	}
	w.stopDaemon()

	diff := func() (map[string]any, int) {
		out, err := w.kvmnet("baseline", "diff", "q1", "-o", "json")
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		var d map[string]any
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatalf("diff -o json: %v\n%s", err, out)
		}
		return d, code
	}
	if d, code := diff(); code != 0 {
		t.Fatalf("diff right after save: exit %d: %v", code, d)
	}

	// web1 sends from 192.168.100.77, which it was not given: port
	// security drops every packet (reason ip) on its tap. A static
	// neighbour skips ARP, which would be dropped for the same reason
	// before any packet left.
	mac := strings.TrimSpace(w.mustExec("host", "cat", "/sys/class/net/kv-dev/address"))
	w.mustExec("web1", "ip", "addr", "add", "192.168.100.77/24", "dev", "eth0")
	w.mustExec("web1", "ip", "neigh", "replace", "192.168.100.1", "lladdr", mac, "dev", "eth0")
	w.exec("web1", "ping", "-c", "50", "-i", "0.01", "-W", "1", "-I", "192.168.100.77", "192.168.100.1")

	d, code := diff()
	if code != 1 {
		t.Errorf("diff after drops: exit %d, want 1", code)
	}
	found := false
	for _, c := range d["changes"].([]any) {
		c := c.(map[string]any)
		if c["kind"] == "port-security" && c["subject"] == "web1-0" && c["metric"] == "drops ip" && c["regression"] == true {
			found = true
			t.Logf("regression: %v", c)
		}
	}
	if !found {
		t.Errorf("no port-security regression on web1-0: %v", d)
	}
	out, _ = w.kvmnet("baseline", "diff", "q1")
	t.Logf("diff:\n%s", out)
}
