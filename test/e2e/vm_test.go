//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestVMAttachThroughDaemon attaches one interface among 1,000 through the
// daemon, as a libvirt hook would at a VM's start: only that interface's
// link and set elements change (every other link as it was, every rule
// with its handle), and detaching it gives back exactly what was there.
func TestVMAttachThroughDaemon(t *testing.T) {
	w := newWorld(t, "")
	var b strings.Builder
	b.WriteString("networks:\n  - {name: dev, mode: nat, subnet: 10.50.0.0/16, egress: eth0}\nvms:\n")
	for i := range 1000 {
		fmt.Fprintf(&b, "  - name: vm%d\n    interfaces: [{network: dev, mac: \"52:54:00:10:%02x:%02x\", ip: 10.50.%d.%d, createTap: true}]\n", i, i>>8, i&0xff, 1+i/200, 10+i%200)
	}
	file := filepath.Join(t.TempDir(), "many.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	w.mustKvmnet("apply", "-f", file)
	w.startDaemon()
	defer w.stopDaemon()

	links := func() []string {
		out := w.mustExec("host", "ip", "-o", "link", "show")
		// Indexes stay; counters and the qdisc state do not matter.
		out = regexp.MustCompile(`qlen \d+`).ReplaceAllString(out, "")
		return strings.Split(strings.TrimSpace(out), "\n")
	}
	startLinks, startRules, startSets := links(), rulesWithHandles(w), setElements(w)

	start := time.Now()
	out := w.mustKvmnet("vm", "attach", "web2", "--network", "dev", "--mac", "52:54:00:00:00:12", "--ip", "10.50.99.12", "--create-tap")
	t.Logf("one interface attached among 1,000 through the daemon in %s (wall, CLI included): %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	if got := rulesWithHandles(w); got != startRules {
		t.Errorf("the attach changed rules:\n--- before\n%s\n--- after\n%s", startRules, got)
	}
	for _, l := range added(startLinks, links()) {
		if !strings.Contains(l, "web2-0") {
			t.Errorf("the attach changed a link that is not web2-0's: %s", l)
		}
	}
	if gone := added(links(), startLinks); len(gone) > 0 {
		t.Errorf("the attach changed links: %q", gone)
	}
	newSets := setElements(w)
	for _, e := range added(startSets, newSets) {
		if !strings.Contains(e, "web2-0") {
			t.Errorf("the attach added an element that is not web2-0's: %s", e)
		}
	}
	if gone := added(newSets, startSets); len(gone) > 0 {
		t.Errorf("the attach removed elements: %q", gone)
	}
	if !slices.ContainsFunc(newSets, func(e string) bool { return strings.Contains(e, `"web2-0" . 52:54:00:00:00:12 . 10.50.99.12`) }) {
		t.Errorf("web2-0's binding is not in sg_bind")
	}
	if out := w.mustExec("host", "ip", "-o", "link", "show", "web2-0"); !strings.Contains(out, "master kv-dev") {
		t.Errorf("web2-0 is not on kv-dev: %s", out)
	}
	if h := w.mustKvmnet("history"); !strings.Contains(h, "kvmnet vm attach") {
		t.Errorf("history lacks the attach:\n%s", h)
	}

	// Refused: nothing changes.
	if out, err := w.kvmnet("vm", "attach", "web3", "--network", "dev", "--mac", "52:54:00:00:00:12"); err == nil || !strings.Contains(out, `--mac: "52:54:00:00:00:12" is already the MAC of VM "web2"`) {
		t.Errorf("a duplicate MAC: %v\n%s", err, out)
	}

	w.mustKvmnet("vm", "detach", "web2")
	if got := links(); !slices.Equal(got, startLinks) {
		t.Errorf("after the detach the links differ: added %q, gone %q", added(startLinks, got), added(got, startLinks))
	}
	if got := setElements(w); !slices.Equal(got, startSets) {
		t.Errorf("after the detach the set elements differ: added %q, gone %q", added(startSets, got), added(got, startSets))
	}
	if got := rulesWithHandles(w); got != startRules {
		t.Errorf("the detach changed rules")
	}
}

// rulesWithHandles lists both of kvmnet's tables with handles, without the
// contents of sets and the counters.
func rulesWithHandles(w *world) string {
	var keep []string
	for _, fam := range []string{"inet", "bridge"} {
		out := w.mustExec("host", "nft", "-a", "list", "table", fam, "kvmnet")
		inSet := false
		for _, line := range strings.Split(out, "\n") {
			trim := strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(trim, "set ") || strings.HasPrefix(trim, "map "):
				inSet = true
			case inSet && trim == "}":
				inSet = false
			case !inSet:
				keep = append(keep, line)
			}
		}
	}
	return regexp.MustCompile(`counter packets \d+ bytes \d+`).ReplaceAllString(strings.Join(keep, "\n"), "counter")
}

// setElements lists the elements of the bridge table's port sets, one
// "SET: ELEMENT" each, sorted.
func setElements(w *world) []string {
	var out []string
	for _, set := range []string{"sg_ports", "sg_mac", "sg_ip4", "sg_bind", "storm_1000_second_keys"} {
		text := w.mustExec("host", "nft", "list", "set", "bridge", "kvmnet", set)
		_, els, ok := strings.Cut(text, "elements = {")
		if !ok {
			continue
		}
		els, _, _ = strings.Cut(els, "}")
		for _, e := range strings.Split(els, ",") {
			if e = strings.Join(strings.Fields(e), " "); e != "" {
				out = append(out, set+": "+e)
			}
		}
	}
	slices.Sort(out)
	return out
}

// added returns the lines of b that are not in a.
func added(a, b []string) []string {
	var out []string
	for _, l := range b {
		if !slices.Contains(a, l) {
			out = append(out, l)
		}
	}
	return out
}
