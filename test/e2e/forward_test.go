//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const forwardConfig = `
networks:
  - name: dev
    mode: nat
    subnet: 192.168.100.0/24
    egress: eth0
    forwards:
      - {port: 8080, to: "web1:80"}
      - {port: 8082, to: "web1:80"}
      - {proto: udp, port: 5353, to: "web1:5353"}
      - {port: 9000-9002, to: "web1:7000"}
      - {port: 8443, to: "web1:80", from: [203.0.113.0/24]}
      - {port: 8081, to: "web1:80", from: [198.51.100.0/24]}
      - {port: 8090, to: "web1:80", rateLimit: 3/minute}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", ip: 192.168.100.10, tap: web1-0}]
  - name: db1
    interfaces: [{network: dev, mac: "52:54:00:00:00:11", ip: 192.168.100.11, tap: db1-0}]
`

// serve starts a long-running server on a lab node and stops it at the end.
func (w *world) serve(node string, args ...string) {
	w.t.Helper()
	cmd := w.lab.Command(context.Background(), node, args...)
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// ask connects with nc and returns what the server said ("" on failure).
func (w *world) ask(node, addr, port string) string {
	out, err := w.exec(node, "nc", "-w2", addr, port)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

func TestForwards(t *testing.T) {
	w := newWorld(t, forwardConfig)
	w.mustKvmnet("apply", "-f", w.file)
	w.startDaemon()
	w.lease("web1")
	w.lease("db1")
	// web1's services: an echo on 80, a UDP answerer on 5353, a marker on
	// 7001 (the range's second port).
	w.serve("web1", "socat", "TCP-LISTEN:80,reuseaddr,fork", "EXEC:cat")
	w.serve("web1", "socat", "UDP-RECVFROM:5353,reuseaddr,fork", "SYSTEM:echo udp-web1")
	w.serve("web1", "socat", "TCP-LISTEN:7001,reuseaddr,fork", "SYSTEM:echo port-7001")
	w.waitFor("web1 services", 10*time.Second, func() bool {
		out, _ := w.exec("web1", "ss", "-ltnu")
		return strings.Contains(out, ":80 ") && strings.Contains(out, ":5353 ") && strings.Contains(out, ":7001 ")
	})
	echo := func(node, port string) string {
		out, err := w.exec(node, "sh", "-c", "echo hello | nc -w1 -q1 172.30.0.2 "+port)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(out)
	}

	t.Run("tcp", func(t *testing.T) {
		if got := echo("inet", "8080"); got != "hello" {
			t.Errorf("internet host through 8080: %q", got)
		}
	})
	t.Run("udp", func(t *testing.T) {
		// socat ends -t after its stdin's EOF (0.5 s unless told):
		// the answer comes from a forked shell, which takes longer than
		// that on a loaded machine.
		out, _ := w.exec("inet", "sh", "-c", "echo hi | socat -t5 -T5 - UDP:172.30.0.2:5353")
		if strings.TrimSpace(out) != "udp-web1" {
			t.Errorf("internet host through 5353/udp: %q", out)
		}
	})
	t.Run("range", func(t *testing.T) {
		if got := w.ask("inet", "172.30.0.2", "9001"); got != "port-7001" {
			t.Errorf("9001 should map to 7001: %q", got)
		}
	})
	t.Run("from", func(t *testing.T) {
		before := w.counter("forward-from-drop")
		if got := echo("inet", "8443"); got != "hello" {
			t.Errorf("source inside from: refused (%q)", got)
		}
		if got := echo("lan", "8443"); got != "" {
			t.Errorf("source 172.30.0.1, outside from:, got through: %q", got)
		}
		if got := echo("inet", "8081"); got != "" {
			t.Errorf("internet host, outside from:, got through: %q", got)
		}
		if after := w.counter("forward-from-drop"); after <= before {
			t.Errorf("forward-from-drop did not count (%d -> %d)", before, after)
		}
	})
	t.Run("rate-limit", func(t *testing.T) {
		before := w.counter("forward-rate-3/minute-drop")
		ok := 0
		for i := 0; i < 8; i++ {
			if echo("inet", "8090") == "hello" {
				ok++
			}
		}
		if ok < 3 || ok >= 8 {
			t.Errorf("%d of 8 new connections passed a 3/minute limit (burst 5)", ok)
		}
		if w.counter("forward-rate-3/minute-drop") <= before {
			t.Error("rate-limit drops were not counted")
		}
	})
	t.Run("hairpin", func(t *testing.T) {
		if got := echo("db1", "8080"); got != "hello" {
			t.Errorf("guest db1 through the host's public address: %q", got)
		}
		if got := echo("host", "8080"); got != "hello" {
			t.Errorf("the host itself through its public address: %q", got)
		}
	})

	t.Run("revocation", func(t *testing.T) {
		a := w.stream("inet", "8080")
		b := w.stream("inet", "8082")
		a.roundtrip(t, "one")
		b.roundtrip(t, "one")
		w.mustKvmnet("forward", "rm", "--network", "dev", "--port", "8080")
		if ls := w.mustKvmnet("forward", "ls"); strings.Contains(ls, "8080 ") {
			t.Errorf("forward ls still lists 8080:\n%s", ls)
		}
		start := time.Now()
		if a.tryRoundtrip("two", time.Second) {
			t.Errorf("connection through the removed forward still works")
		}
		t.Logf("removed forward's connection gave no answer within %s", time.Since(start).Round(time.Millisecond))
		b.roundtrip(t, "two")
		if got := echo("inet", "8080"); got != "" {
			t.Errorf("new connection to a removed forward: %q", got)
		}
		w.mustKvmnet("forward", "add", "--network", "dev", "--port", "8080", "--to", "web1:80")
		if got := echo("inet", "8080"); got != "hello" {
			t.Errorf("re-added forward: %q", got)
		}
	})

	t.Run("conflict", func(t *testing.T) {
		w.serve("host", "socat", "TCP-LISTEN:8500,reuseaddr,fork", "SYSTEM:echo host")
		w.waitFor("host service", 5*time.Second, func() bool { return w.ask("host", "127.0.0.1", "8500") == "host" })
		out, err := w.kvmnet("forward", "add", "--network", "dev", "--port", "8500", "--to", "web1:80")
		if err == nil || !strings.Contains(out, "port 8500/tcp is in use on the host: socat (pid") {
			t.Errorf("forward onto a port the host listens on: %v\n%s", err, out)
		}
		w.mustKvmnet("forward", "add", "--network", "dev", "--port", "8500", "--to", "web1:80", "--force")
		if got := echo("inet", "8500"); got != "hello" {
			t.Errorf("forced forward: %q", got)
		}
	})

	t.Run("egress-address-change", func(t *testing.T) {
		// The daemon follows the egress interface's addresses.
		w.mustExec("host", "ip", "addr", "add", "172.30.0.3/24", "dev", "eth0")
		w.waitFor("forwards on the new address", 5*time.Second, func() bool {
			out, _ := w.exec("host", "nft", "list", "map", "inet", "kvmnet", "dnat4")
			return strings.Contains(out, "172.30.0.3 . tcp . 8080")
		})
		out, _ := w.exec("inet", "sh", "-c", "echo again | nc -w1 -q1 172.30.0.3 8080")
		if strings.TrimSpace(out) != "again" {
			t.Errorf("forward on the new egress address: %q", out)
		}
	})

	if got := w.mustKvmnet("get", "forwards"); !regexpLine(got, "dev", "udp", "5353", "web1:5353", "172.30.0.2", "active") {
		t.Errorf("get forwards:\n%s", got)
	}

	exported := w.mustKvmnet("export")
	if !strings.Contains(exported, "port: \"8500\"") && !strings.Contains(exported, "port: 8500") {
		t.Errorf("export lacks the added forward:\n%s", exported)
	}
}

// stream is an open TCP connection from a lab node, through socat.
type stream struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func (w *world) stream(node, port string) *stream {
	w.t.Helper()
	cmd := w.lab.Command(context.Background(), node, "socat", "-", "TCP:172.30.0.2:"+port)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &stream{cmd: cmd, in: in, out: bufio.NewReader(out)}
}

func (s *stream) tryRoundtrip(msg string, timeout time.Duration) bool {
	got := make(chan string, 1)
	go func() {
		line, _ := s.out.ReadString('\n')
		got <- strings.TrimSpace(line)
	}()
	if _, err := fmt.Fprintln(s.in, msg); err != nil {
		return false
	}
	select {
	case line := <-got:
		return line == msg
	case <-time.After(timeout):
		return false
	}
}

func (s *stream) roundtrip(t *testing.T, msg string) {
	t.Helper()
	if !s.tryRoundtrip(msg, 3*time.Second) {
		t.Fatalf("no echo of %q", msg)
	}
}

// TestTenThousandForwards: 10,000 forwards apply in one transaction, and
// adding one more changes map elements only: every rule keeps its handle.
func TestTenThousandForwards(t *testing.T) {
	w := newWorld(t, "")
	var b strings.Builder
	b.WriteString("networks:\n  - name: dev\n    mode: nat\n    subnet: 192.168.100.0/24\n    egress: eth0\n    forwards:\n")
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&b, "      - {port: %d, to: \"192.168.100.10:80\"}\n", 20000+i)
	}
	file := filepath.Join(t.TempDir(), "many.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	w.mustKvmnet("apply", "-f", file)
	t.Logf("10,000 forwards applied in %s (wall, CLI included)", time.Since(start).Round(time.Millisecond))
	if out := w.mustExec("host", "nft", "list", "map", "inet", "kvmnet", "dnat4"); strings.Count(out, ":") < 10000 {
		t.Fatalf("dnat4 has fewer than 10,000 elements")
	}
	rules := func() string { return rulesWithHandles(w) }
	before := rules()
	start = time.Now()
	w.mustKvmnet("forward", "add", "--network", "dev", "--port", "40000", "--to", "192.168.100.10:80")
	t.Logf("one forward added to 10,000 in %s (wall, CLI included)", time.Since(start).Round(time.Millisecond))
	if after := rules(); after != before {
		t.Errorf("adding one forward changed the rules:\n--- before\n%s\n--- after\n%s", before, after)
	}
	if !strings.Contains(w.mustExec("host", "nft", "list", "map", "inet", "kvmnet", "dnat4"), "40000") {
		t.Error("the new forward is not in dnat4")
	}

	// The same through a daemon, which keeps its reading of the table
	// from one edit to the next.
	w.startDaemon()
	defer w.stopDaemon()
	for _, port := range []string{"40001", "40002"} {
		start = time.Now()
		w.mustKvmnet("forward", "add", "--network", "dev", "--port", port, "--to", "192.168.100.10:80")
		t.Logf("one forward added to 10,000 through the daemon in %s (wall, CLI included)", time.Since(start).Round(time.Millisecond))
	}
	w.mustKvmnet("forward", "rm", "--network", "dev", "--port", "40001")
	if after := rules(); after != before {
		t.Errorf("edits through the daemon changed the rules:\n--- before\n%s\n--- after\n%s", before, after)
	}
	dnat := w.mustExec("host", "nft", "list", "map", "inet", "kvmnet", "dnat4")
	if !strings.Contains(dnat, ". 40002 :") || strings.Contains(dnat, ". 40001 :") {
		t.Error("dnat4 does not show the edits made through the daemon (40002 added, 40001 removed)")
	}
	if n := strings.Count(dnat, ". tcp ."); n != 10002 {
		t.Errorf("dnat4 has %d forwards, want 10,002", n)
	}
}
