//go:build e2e

// Package e2e runs kvmnet end to end in the lab: a LAN with its router and
// DHCP server, an internet host, the KVM host where kvmnet runs with
// --netns, and one namespace per guest. Real clients (udhcpc, dig, ping,
// nc, socat) do the talking.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/lab"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

var kvmnetBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipping, the lab needs root")
		os.Exit(0)
	}
	for _, tool := range []string{"nft", "udhcpc", "dnsmasq", "dig", "socat", "nc", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Printf("e2e: %s is not installed (make deps installs it)\n", tool)
			os.Exit(1)
		}
	}
	dir, err := os.MkdirTemp("", "kvmnet-e2e-")
	if err != nil {
		panic(err)
	}
	kvmnetBin = filepath.Join(dir, "kvmnet")
	build := exec.Command("go", "build", "-o", kvmnetBin, "../../cmd/kvmnet")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Println("e2e: building kvmnet:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// world is one lab with kvmnet on its host.
type world struct {
	t      *testing.T
	lab    *lab.Lab
	state  string // kvmnet --state-dir
	file   string // the host.yaml applied
	daemon *exec.Cmd
	// daemonArgs are added to the daemon's command line.
	daemonArgs []string
}

func randomPrefix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "e" + hex.EncodeToString(b)
}

// newWorld brings a lab up for the config yaml and registers its teardown.
func newWorld(t *testing.T, yaml string) *world {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "host.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	// A world may start with no networks (a test applies its own).
	cfg, err := model.ParseStored(file, []byte(yaml))
	if err != nil {
		t.Fatalf("test config: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, lab.Options{Prefix: randomPrefix(), Config: cfg})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	w := &world{t: t, lab: l, state: filepath.Join(dir, "state"), file: file}
	t.Cleanup(func() {
		w.stopDaemon()
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	return w
}

// kvmnet runs the CLI on the lab's host.
func (w *world) kvmnet(args ...string) (string, error) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{"--netns", w.lab.NS("host"), "--state-dir", w.state}, args...)
	cmd := exec.CommandContext(ctx, kvmnetBin, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), fmt.Errorf("kvmnet %s: %w\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), nil
}

func (w *world) mustKvmnet(args ...string) string {
	w.t.Helper()
	out, err := w.kvmnet(args...)
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

// startDaemon starts `kvmnet daemon` and waits until its API answers.
func (w *world) startDaemon() {
	w.t.Helper()
	log, err := os.Create(filepath.Join(w.t.TempDir(), "daemon.log"))
	if err != nil {
		w.t.Fatal(err)
	}
	args := append([]string{"--netns", w.lab.NS("host"), "--state-dir", w.state, "daemon", "--log-level", "debug", "--metrics-addr", "127.0.0.1:9477", "--resync", "1s"}, w.daemonArgs...)
	cmd := exec.Command(kvmnetBin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.daemon = cmd
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	w.waitFor("daemon API", 20*time.Second, func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(log.Name())
			w.t.Fatalf("daemon exited:\n%s", b)
		default:
		}
		_, err := w.kvmnet("get", "networks")
		return err == nil && socketAlive(filepath.Join(w.state, "kvmnet.sock"))
	})
	w.t.Cleanup(func() {
		if w.t.Failed() {
			b, _ := os.ReadFile(log.Name())
			w.t.Logf("daemon log:\n%s", b)
		}
	})
}

func socketAlive(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// stopDaemon kills the daemon (SIGKILL: the hardest stop).
func (w *world) stopDaemon() {
	if w.daemon == nil || w.daemon.Process == nil {
		return
	}
	w.daemon.Process.Kill()
	w.daemon.Process.Wait()
	w.daemon = nil
}

// exec runs a command on a lab node.
func (w *world) exec(node string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return w.lab.Exec(ctx, node, args...)
}

func (w *world) mustExec(node string, args ...string) string {
	w.t.Helper()
	out, err := w.exec(node, args...)
	if err != nil {
		w.t.Fatalf("%s: %v", node, err)
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func (w *world) waitFor(what string, timeout time.Duration, cond func() bool) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			w.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not a fixed wait
	}
}

// dumps are the kernel's own views of the host, taken with independent
// tools, to compare states before and after.
func (w *world) dumps() map[string]string {
	w.t.Helper()
	// A fresh link's IPv6 link-local address adds a local route once
	// duplicate address detection ends: wait for that, so that the dumps
	// compare states, not timing.
	w.waitFor("IPv6 DAD to settle", 10*time.Second, func() bool {
		out, err := w.exec("host", "ip", "-6", "addr", "show", "tentative")
		return err == nil && strings.TrimSpace(out) == ""
	})
	d := map[string]string{}
	for name, args := range map[string][]string{
		"nft":     nstest.NftTables,
		"link":    {"ip", "-d", "link", "show"},
		"addr":    {"ip", "addr", "show"},
		"route":   {"ip", "route", "show", "table", "all"},
		"forward": {"sysctl", "net.ipv4.ip_forward"},
	} {
		d[name] = nstest.Normalize(w.mustExec("host", args...))
	}
	return d
}

func compareDumps(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	for k := range want {
		if want[k] != got[k] {
			t.Errorf("%s: %s dump differs\n--- want\n%s\n--- got\n%s", what, k, want[k], got[k])
		}
	}
}
