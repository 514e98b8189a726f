//go:build e2e

package e2e

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// exitCode is the exit code of a failed kvmnet run, 0 when it worked.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// refused runs kvmnet, expects it to fail with code and a message holding
// want, and never with a Go stack trace.
func (w *world) refused(code int, want string, args ...string) string {
	w.t.Helper()
	out, err := w.kvmnet(args...)
	if got := exitCode(err); got != code {
		w.t.Fatalf("kvmnet %s: exit code %d, want %d:\n%s", strings.Join(args, " "), got, code, out)
	}
	for _, trace := range []string{"goroutine ", "panic:", "SIGBUS", "SIGSEGV", "runtime."} {
		if strings.Contains(out, trace) {
			w.t.Fatalf("kvmnet %s: a stack trace:\n%s", strings.Join(args, " "), out)
		}
	}
	if !strings.Contains(out, want) {
		w.t.Fatalf("kvmnet %s: %q not in:\n%s", strings.Join(args, " "), want, out)
	}
	return out
}

// daemonRefuses starts the daemon and expects it to exit with a message
// holding want, without changing anything.
func (w *world) daemonRefuses(want string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvmnetBin, "--netns", w.lab.NS("host"), "--state-dir", w.state, "daemon", "--resync", "1s")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), want) {
		w.t.Fatalf("daemon: %v, %q not in:\n%s", err, want, out)
	}
	if strings.Contains(string(out), "goroutine ") {
		w.t.Fatalf("daemon: a stack trace:\n%s", out)
	}
}

func (w *world) writeFile(name, content string) string {
	w.t.Helper()
	path := filepath.Join(w.t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		w.t.Fatal(err)
	}
	return path
}

// TestNothingLost tries what once lost a host's networks: an empty file,
// a file that drops a network, a null API body, a nat subnet on the
// uplink's own LAN, a state database emptied, deleted, truncated,
// overwritten or replaced by a link. Each is refused with a message and
// leaves the kernel as it was; a lost database comes back from its backup.
func TestNothingLost(t *testing.T) {
	w := newWorld(t, natConfig)
	w.mustKvmnet("apply", "-f", w.file)
	applied := w.dumps()
	unchanged := func(what string) {
		t.Helper()
		compareDumps(t, what, applied, w.dumps())
	}

	// Files that describe nothing.
	for name, content := range map[string]string{"empty.yaml": "", "comment.yaml": "# nothing yet\n", "dashes.yaml": "---\n"} {
		f := w.writeFile(name, content)
		w.refused(1, f+":1:1: the file describes no networks", "apply", "-f", f)
		w.refused(1, "describes no networks", "plan", "-f", f)
	}
	unchanged("empty files")

	// A file that lost a network.
	lost := w.writeFile("lost.yaml", strings.Replace(natConfig, "  - name: test\n    mode: nat\n    subnet: 192.168.200.0/24\n", "", 1))
	lost = w.writeFile("lost.yaml", strings.Replace(string(must(os.ReadFile(lost))), "  - name: t1\n    interfaces:\n      - {network: test, mac: \"52:54:00:00:00:20\", tap: t1-0}\n", "", 1))
	w.refused(1, "it removes network test (bridge kv-test, 1 port)", "apply", "-f", lost)
	if out := w.mustKvmnet("plan", "-f", lost); !strings.Contains(out, "# removes network test") {
		t.Errorf("plan of a removal does not say so:\n%s", out)
	}
	unchanged("a refused removal")
	w.mustKvmnet("apply", "-f", lost, "--allow-removal")
	if _, err := w.exec("host", "ip", "link", "show", "kv-test"); err == nil {
		t.Error("kv-test is still there after apply --allow-removal")
	}
	w.mustKvmnet("apply", "-f", w.file)
	applied = w.dumps() // kv-test is back, as a new link

	// A nat network on the uplink's own LAN (the host is 172.30.0.2/24
	// there, its router 172.30.0.1).
	onLAN := w.writeFile("onlan.yaml", strings.Replace(natConfig, "192.168.200.0/24", "172.30.0.0/24", 1))
	w.refused(1, "networks[1].subnet: 172.30.0.0/24 overlaps the host's address 172.30.0.2/24 on eth0", "apply", "-f", onLAN)
	w.refused(1, "subnet: \"0.0.0.0/0\" is too large", "apply", "-f", w.writeFile("all.yaml", strings.Replace(natConfig, "192.168.200.0/24", "0.0.0.0/0", 1)))
	unchanged("refused subnets")

	// API bodies without a file, through the daemon.
	w.startDaemon()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(w.state, "kvmnet.sock"))
	}}}
	for _, tt := range []struct{ path, body string }{{"/v1/apply", "null"}, {"/v1/plan", "{}"}, {"/v1/apply", "{}"}, {"/v1/apply", `{"doc": ""}`}} {
		resp, err := client.Post("http://kvmnet"+tt.path, "application/json", strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("POST %s %s: %s, want 400", tt.path, tt.body, resp.Status)
		}
	}
	w.stopDaemon()
	unchanged("API bodies without a file")
	applied = w.dumps() // the daemon's leases may have added elements

	db := filepath.Join(w.state, "state.db")
	clean := must(os.ReadFile(db))
	restore := func() {
		t.Helper()
		out := w.mustKvmnet("store", "restore")
		if !strings.Contains(out, "restored revision") {
			t.Fatalf("store restore:\n%s", out)
		}
		w.mustKvmnet("store", "check")
		if out := w.mustKvmnet("plan", "-f", w.file); strings.TrimSpace(out) != "no changes" {
			t.Fatalf("after the restore the file still plans changes:\n%s", out)
		}
	}

	// Emptied: every command says so with exit code 3; the daemon does
	// not start; the backup brings it back.
	if err := os.Truncate(db, 0); err != nil {
		t.Fatal(err)
	}
	w.refused(3, "the state database is an empty file (0 bytes): its contents were lost", "get", "networks")
	w.refused(3, "kvmnet store restore", "apply", "-f", w.file)
	w.daemonRefuses("empty file (0 bytes)")
	out := w.refused(3, "DAMAGED", "store", "check")
	if !regexp.MustCompile(`backup\.json +ok`).MatchString(out) {
		t.Errorf("store check does not show a good backup:\n%s", out)
	}
	unchanged("an emptied database")
	restore()

	// Deleted: a new database would hold no desired state; the daemon
	// refuses to converge the kernel towards it.
	os.Remove(db)
	w.daemonRefuses("holds no desired state, but the kernel holds kvmnet's bridge kv-dev")
	unchanged("a deleted database")
	os.Remove(db) // the daemon made a new, empty one
	restore()

	// Truncated and overwritten: messages, never SIGBUS or a panic.
	os.WriteFile(db, clean[:20000], 0o600)
	w.refused(3, "it is truncated", "get", "networks")
	w.daemonRefuses("it is truncated")
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 10 {
		data := append([]byte(nil), clean...)
		for i := 2 * 4096; i < len(data); i++ {
			if r.IntN(50) == 0 {
				data[i] = byte(r.Uint32())
			}
		}
		os.WriteFile(db, data, 0o600)
		out, err := w.kvmnet("store", "check")
		if code := exitCode(err); code != 3 || strings.Contains(out, "goroutine ") {
			t.Errorf("round %d: store check of an overwritten database: exit %d:\n%s", round, code, out)
		}
	}
	unchanged("damaged databases")
	os.Remove(db)
	restore()

	// A link planted in the state dir is not followed.
	os.Rename(db, db+".real")
	target := filepath.Join(t.TempDir(), "elsewhere.db")
	os.Symlink(target, db)
	w.refused(1, "is a symbolic link", "get", "networks")
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kvmnet created %s through a link", target)
	}
	os.Remove(db)
	os.Rename(db+".real", db)
	journal := filepath.Join(w.state, "journal")
	os.Symlink(target, journal)
	w.refused(1, "is a symbolic link", "apply", "-f", w.file)
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kvmnet wrote %s through a link", target)
	}
	os.Remove(journal)
	unchanged("links in the state dir")
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
