package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	datapath "github.com/kvmnet/kvmnet/internal/backend"
	"github.com/kvmnet/kvmnet/internal/backend/backendtest"
	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/kernel/fake"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// TestSecondBackendCLI runs plan, apply and get networks on a file with
// a network on the test backend, as a user would type them, with the
// Linux datapath in memory (no root).
func TestSecondBackendCLI(t *testing.T) {
	k := fake.New(&plan.Observed{
		Links:   map[string]plan.Link{"eth0": {Name: "eth0", Kind: "veth", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("172.30.0.2/24")}}},
		Sysctls: map[string]string{plan.SysctlIPForward: "0"},
	})
	rec := backendtest.New()
	d := deps{
		openKernel: func() (engine.Kernel, func(), error) { return k, func() {}, nil },
		backends:   map[string]datapath.Backend{"test": rec},
	}
	state := t.TempDir()
	file := filepath.Join(t.TempDir(), "host.yaml")
	os.WriteFile(file, []byte("networks:\n  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}\n  - {name: far, mode: nat, subnet: 10.20.0.0/24, backend: test}\n"+
		"vms:\n  - name: web1\n    interfaces: [{network: far, mac: \"52:54:00:00:00:11\"}]\n"), 0o644)
	run := func(args ...string) (string, error) {
		root := newRootCmdWith(d)
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(append([]string{"--state-dir", state}, args...))
		err := root.Execute()
		return out.String(), err
	}

	out, err := run("plan", "-f", file)
	if err != nil || !strings.Contains(out, "# backend test\ntest-backend add network far ports [web1/52:54:00:00:00:11]") || !strings.Contains(out, "ip link add kv-dev") {
		t.Fatalf("plan: %v\n%s", err, out)
	}
	if out, err = run("apply", "-f", file); err != nil || !strings.Contains(out, "test: 1 network changes") {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if rec.Dump() != "far [web1/52:54:00:00:00:11]\n" {
		t.Errorf("test backend after apply: %q", rec.Dump())
	}
	if out, err = run("get", "networks"); err != nil || !regexpMatch(`(?m)^far\s+nat\s+test\s+-\s+`, out) || !regexpMatch(`(?m)^NAME\s+MODE\s+BACKEND\s+BRIDGE`, out) {
		t.Errorf("get networks: %v\n%s", err, out)
	}
	out, err = run("get", "networks", "-o", "json")
	var nets []engine.NetworkStatus
	if err != nil || json.Unmarshal([]byte(out), &nets) != nil || len(nets) != 2 || nets[1].Backend != "test" || nets[1].State != "up" || nets[0].Backend != "linux" {
		t.Errorf("get networks -o json: %v\n%s", err, out)
	}
	if out, err = run("apply", "-f", file); err != nil || !strings.Contains(out, "no changes") {
		t.Errorf("apply again: %v\n%s", err, out)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
