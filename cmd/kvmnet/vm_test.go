package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	datapath "github.com/kvmnet/kvmnet/internal/backend"
	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/kernel/fake"
)

// TestVMAttachDetach runs `kvmnet vm attach` and `vm detach` as a libvirt
// hook would, against the kernel in memory (no root): an attach among 50
// interfaces changes only what belongs to the new one, a refused attach
// changes nothing, and detaching it brings back the kernel it started
// from.
func TestVMAttachDetach(t *testing.T) {
	k := fake.LANHost()
	d := deps{
		openKernel: func() (engine.Kernel, func(), error) { return k, func() {}, nil },
		backends:   map[string]datapath.Backend{},
	}
	state := t.TempDir()
	var doc strings.Builder
	doc.WriteString("networks:\n  - {name: dev, mode: nat, subnet: 192.168.0.0/16, egress: eth0}\n  - {name: lan, mode: bridged, uplink: eth0}\nvms:\n")
	for i := range 50 {
		fmt.Fprintf(&doc, "  - name: vm%d\n    interfaces: [{network: dev, mac: \"52:54:00:00:01:%02x\", ip: 192.168.1.%d, createTap: true}]\n", i, i, i+10)
	}
	file := filepath.Join(t.TempDir(), "host.yaml")
	os.WriteFile(file, []byte(doc.String()), 0o644)
	run := func(args ...string) (string, error) {
		root := newRootCmdWith(d)
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--state-dir", state}, args...))
		err := root.Execute()
		return out.String(), err
	}
	if out, err := run("apply", "-f", file); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	start := k.Dump()

	out, err := run("vm", "attach", "web2", "--network", "dev", "--mac", "52:54:00:00:00:12", "--ip", "192.168.100.12", "--create-tap")
	if err != nil || !strings.Contains(out, "applied: 1 add-tap, 1 set-up, 1 set-master, 1 nft") {
		t.Fatalf("attach: %v\n%s", err, out)
	}
	attached := k.Dump()
	for _, line := range diffLines(start, attached) {
		if !strings.Contains(line, "web2-0") && !strings.Contains(line, "192.168.100.12") {
			t.Errorf("the attach changed something not of web2's: %q", line)
		}
	}
	if l, ok, _ := k.LinkState("web2-0"); !ok || l.Master != "kv-dev" || !l.Up {
		t.Errorf("web2-0 after the attach: %+v (exists: %v)", l, ok)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--network", "nope", "--mac", "52:54:00:00:00:13"}, `kvmnet vm attach: --network: network "nope" does not exist (networks: dev, lan)`},
		{[]string{"--network", "dev", "--mac", "52:54:00:00:00:12"}, `kvmnet vm attach: --mac: "52:54:00:00:00:12" is already the MAC of VM "web2"`},
		{[]string{"--network", "dev", "--mac", "52:54:00:00:00:13", "--ip", "10.9.9.9"}, `kvmnet vm attach: --ip: "10.9.9.9" is outside`},
		{[]string{"--network", "dev", "--mac", "52:54:00:00:00:13", "--ip", "192.168.1.10"}, `--ip: "192.168.1.10" is already reserved for VM "vm0"`},
		{[]string{"--network", "dev", "--mac", "52:54:00:00:00:13", "--tap", "vm3-0"}, `--tap: tap "vm3-0" is already the tap of VM "vm3"`},
	} {
		calls := k.Calls
		out, err := run(append([]string{"vm", "attach", "web3"}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("attach %v: %v\n%s\nwant an error containing %q", tt.args, err, out, tt.want)
		}
		if k.Calls != calls || k.Dump() != attached {
			t.Errorf("the refused attach %v changed the kernel", tt.args)
		}
	}
	out, err = run("export")
	if err != nil || !strings.Contains(out, "name: web2") || strings.Contains(out, "web3") {
		t.Errorf("export after the attaches: %v\n%s", err, out)
	}

	if out, err := run("vm", "detach", "web9"); err == nil || !strings.Contains(err.Error(), `VM: VM "web9" does not exist`) {
		t.Errorf("detach of a VM that does not exist: %v\n%s", err, out)
	}
	if out, err := run("vm", "detach", "web2"); err != nil || !strings.Contains(out, "applied:") {
		t.Fatalf("detach: %v\n%s", err, out)
	}
	if got := k.Dump(); got != start {
		t.Errorf("after attach and detach the kernel differs from before:\n%s", strings.Join(diffLines(start, got), "\n"))
	}
	if out, err := run("apply", "-f", file); err != nil || !strings.Contains(out, "no changes") {
		t.Errorf("the file again after attach and detach: %v\n%s", err, out)
	}
}

// diffLines returns the lines of b not in a and of a not in b, a set's
// elements each a line of its own (the fake kernel's dump lists a set on
// one line).
func diffLines(a, b string) []string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			if set, elems, ok := strings.Cut(l, ": "); ok && strings.HasPrefix(strings.TrimSpace(set), "set ") {
				for _, e := range strings.Split(elems, ", ") {
					m[set+": "+e] = true
				}
				continue
			}
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for l := range mb {
		if !ma[l] {
			out = append(out, "+ "+l)
		}
	}
	for l := range ma {
		if !mb[l] {
			out = append(out, "- "+l)
		}
	}
	return out
}
