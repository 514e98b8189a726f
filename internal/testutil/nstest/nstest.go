// Package nstest gives tests fresh, named network namespaces and ways to run
// commands and Go code inside them. Every namespace it creates is named
// kvt-<random> and deleted when the test ends, so a test never touches the
// host's own network.
package nstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// Prefix starts the name of every namespace New creates, so leftovers of a
// crashed test run are easy to recognise (`ip netns list | grep kvt-`).
const Prefix = "kvt-"

// RequireRoot skips the test unless it runs as root: creating namespaces,
// bridges and veths needs CAP_SYS_ADMIN and CAP_NET_ADMIN.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces")
	}
}

// New creates a fresh named network namespace with `ip netns add`, brings its
// loopback up and registers its deletion with t.Cleanup. It returns the name,
// usable with `ip netns exec`, Run and Enter.
func New(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("generating a namespace name: %v", err)
	}
	name := Prefix + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("creating network namespace %q: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("deleting network namespace %q: %v: %s", name, err, strings.TrimSpace(string(out)))
		}
	})
	Run(t, name, "ip", "link", "set", "lo", "up")
	return name
}

// Run runs a command inside namespace ns (through `ip netns exec`, which also
// remounts /sys for it) and returns its combined output. The test fails when
// the command does.
func Run(t testing.TB, ns string, args ...string) string {
	t.Helper()
	out, err := Command(context.Background(), ns, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("running %q in namespace %q: %v: %s", strings.Join(args, " "), ns, err, strings.TrimSpace(string(out)))
	}
	return string(out)
}

// Command returns an unstarted command that runs args inside namespace ns and
// is killed when ctx is done, for callers that need a deadline, extra
// environment or a background process. LC_ALL=C keeps the output of tools
// parseable.
func Command(ctx context.Context, ns string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

// Enter moves the calling goroutine into namespace ns for good: it locks the
// goroutine to its OS thread and switches that thread's namespace. It never
// unlocks, so when the goroutine ends the runtime throws the thread away
// instead of handing a thread in the wrong namespace to other goroutines (the
// trap described in containernetworking/plugins pkg/ns/README.md).
//
// Sockets take the namespace of the thread that creates them, so a server
// started from an entered goroutine listens inside ns even though its other
// goroutines run elsewhere. Goroutines started after Enter do not inherit the
// namespace. Enter calls t.Fatal on failure, so call it from the test's own
// goroutine (which ends with the test) or use Do.
func Enter(t testing.TB, ns string) {
	t.Helper()
	if err := enter(ns); err != nil {
		t.Fatal(err)
	}
}

// Do runs fn on a new goroutine that has entered namespace ns and waits for
// it to return. The goroutine's thread is discarded afterwards. fn runs off
// the test goroutine, so it reports failures with t.Error, not t.Fatal.
func Do(t testing.TB, ns string, fn func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		if err := enter(ns); err != nil {
			errc <- err
			return
		}
		// Report completion even if fn calls runtime.Goexit.
		defer func() { errc <- nil }()
		fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func enter(ns string) error {
	runtime.LockOSThread()
	h, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("opening network namespace %q: %w", ns, err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return fmt.Errorf("entering network namespace %q: %w", ns, err)
	}
	return nil
}
