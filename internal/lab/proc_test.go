package lab

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// startWaiting starts a process that waits for its stdin to close and has
// args on its command line. The returned channel closes when it has ended.
func startWaiting(t *testing.T, args ...string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", "read x"}, args...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		stdin.Close()
		<-done
	})
	return cmd, done
}

// TestStopRecorded: a pid file whose process runs a lab command line is
// stopped; one whose pid now belongs to another process is left alone,
// without error.
func TestStopRecorded(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("needs sh")
	}
	dir := t.TempDir()
	ours, oursDone := startWaiting(t, "lab-process", dir)
	other, otherDone := startWaiting(t, "someone-else")
	for name, cmd := range map[string]*exec.Cmd{"ours.pid": ours, "reused.pid": other} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := stopRecorded(dir, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("stopRecorded: %v", err)
	}
	select {
	case <-oursDone:
	case <-time.After(10 * time.Second):
		t.Errorf("the lab's process still runs")
	}
	select {
	case <-otherDone:
		t.Errorf("a process that is not the lab's was stopped")
	default:
	}
	// Twice: the first is gone now, and that is fine too.
	if err := stopRecorded(dir, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("stopRecorded again: %v", err)
	}
}
