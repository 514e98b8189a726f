//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/bench"
)

// benchPrefix returns a fresh prefix and registers a check that nothing of
// it is left when the test ends.
func benchPrefix(t *testing.T) string {
	t.Helper()
	p := "b" + randomPrefix()[1:]
	forward := readForward(t)
	t.Cleanup(func() {
		if left := namespacesWith(t, p+"-"); len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
			for _, ns := range left {
				exec.Command("ip", "netns", "del", ns).Run()
			}
		}
		if _, err := os.Stat(filepath.Join("/run/kvmnet/lab", p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("lab directory /run/kvmnet/lab/%s left behind (%v)", p, err)
		}
		if got := readForward(t); got != forward {
			t.Errorf("the machine's net.ipv4.ip_forward changed from %s to %s", forward, got)
		}
	})
	return p
}

func namespacesWith(t *testing.T, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func readForward(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
}

// runBench runs `kvmnet ARGS...` in the machine's namespace and returns
// stdout and stderr.
func runBench(t *testing.T, timeout time.Duration, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvmnetBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kvmnet %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

// TestBench runs the network bench for one short round and checks its
// report, its chart and that it leaves nothing behind.
func TestBench(t *testing.T) {
	requireTools(t, "iperf3")
	prefix := benchPrefix(t)
	chart := filepath.Join(t.TempDir(), "bench.svg")
	out, stderr := runBench(t, 2*time.Minute, "bench", "--rounds", "1", "--duration", "1s", "--probes", "300",
		"--prefix", prefix, "-o", "json", "--chart", chart)

	var rep bench.NetReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench -o json: %v\n%s", err, out)
	}
	// Every path is measured: this kvmnet applies bridged networks and
	// forwards, so a skipped path is a broken bench or a broken kvmnet,
	// and the figures the bench exists for would be missing.
	for _, name := range bench.AllPaths {
		p, ok := rep.Path(name)
		if !ok {
			t.Errorf("path %s missing from the report (skipped: %+v)", name, rep.Skipped)
			continue
		}
		for _, m := range []string{bench.MetricTCP1, bench.MetricTCP4, bench.MetricUDP, bench.MetricLatP50, bench.MetricLatP99} {
			if s := p.Get(m); !s.Valid() || s.Median <= 0 {
				t.Errorf("%s %s = %+v, want a positive figure (the bench's warnings: %q)", name, m, s, rep.Warnings)
			}
		}
	}
	if len(rep.Skipped) > 0 {
		t.Errorf("paths skipped: %+v", rep.Skipped)
	}
	if _, ok := rep.RatioFor(bench.PathNAT, bench.PathRouted, bench.MetricTCP1); !ok {
		t.Errorf("no nat/routed ratio in %+v", rep.Ratios)
	}
	if _, ok := rep.RatioFor(bench.PathBridged, bench.PathLinuxBr, bench.MetricTCP1); !ok {
		t.Errorf("no bridged/linuxbr ratio in %+v", rep.Ratios)
	}
	if !strings.Contains(stderr, "bench: [1/") || !strings.Contains(stderr, "tearing down") {
		t.Errorf("stderr lacks progress and teardown:\n%s", stderr)
	}

	f, err := os.Open(chart)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("chart: %v", err)
		}
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestBenchInterrupt stops a bench with SIGINT (Ctrl-C) in the middle of
// its measurements: it must tear its lab down and say so.
func TestBenchInterrupt(t *testing.T) {
	requireTools(t, "iperf3")
	prefix := benchPrefix(t)
	cmd := exec.Command(kvmnetBin, "bench", "--rounds", "3", "--duration", "5s", "--prefix", prefix, "--paths", "raw,nat")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(stderr.String(), "bench: [1/") {
		select {
		case err := <-done:
			t.Fatalf("bench ended before measuring: %v\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond): // polling interval
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("bench did not start measuring within a minute:\n%s", stderr.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("interrupted bench exited 0")
		}
	case <-time.After(45 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("bench still runs 45s after SIGINT:\n%s", stderr.String())
	}
	s := stderr.String()
	if !strings.Contains(s, "tearing down") || !strings.Contains(s, "interrupted") {
		t.Errorf("stderr after SIGINT:\n%s", s)
	}
	t.Logf("stderr:\n%s", s)
}

// TestBenchApply times a tiny apply at one size, kvmnet and the recipe.
func TestBenchApply(t *testing.T) {
	prefix := benchPrefix(t)
	out, _ := runBench(t, time.Minute, "bench", "apply", "--sizes", "5", "--rounds", "1", "--prefix", prefix, "-o", "json")
	var rep bench.ApplyReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench apply -o json: %v\n%s", err, out)
	}
	if len(rep.Rows) != 4 {
		t.Fatalf("rows = %+v, want 4 steps", rep.Rows)
	}
	for _, r := range rep.Rows {
		if !r.Kvmnet.Valid() || r.Kvmnet.Median <= 0 {
			t.Errorf("%s: kvmnet %+v", r.Step, r.Kvmnet)
		}
		if r.Step != bench.StepNoop && (!r.Recipe.Valid() || r.Commands == 0) {
			t.Errorf("%s: recipe %+v, %d commands", r.Step, r.Recipe, r.Commands)
		}
	}
}

// TestBenchDHCP loads both DHCP servers at one low rate.
func TestBenchDHCP(t *testing.T) {
	requireTools(t, "perfdhcp")
	prefix := benchPrefix(t)
	out, _ := runBench(t, time.Minute, "bench", "dhcp", "--rates", "50", "--duration", "1s", "--clients", "20", "--prefix", prefix, "-o", "json")
	var rep bench.DHCPReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench dhcp -o json: %v\n%s", err, out)
	}
	if len(rep.Servers) != 2 {
		t.Fatalf("servers = %+v, want kvmnet and dnsmasq", rep.Servers)
	}
	for _, s := range rep.Servers {
		if len(s.Runs) != 1 || s.Runs[0].Request.Received == 0 {
			t.Errorf("%s: runs %+v, want one with ACKs", s.Server, s.Runs)
		}
	}
}
