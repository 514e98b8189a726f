package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Run is run, for the packages that drive labs (the bench).
func Run(ctx context.Context, name string, args ...string) (string, error) {
	return run(ctx, name, args...)
}

// run runs a command and returns its stdout. It runs with LC_ALL=C so the
// messages quoted in errors read the same everywhere. On failure the error
// names the command and carries its stderr (or, when that is empty, its
// stdout: ping, for one, reports there).
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		out := strings.TrimSpace(stderr.String())
		if out == "" {
			out = strings.TrimSpace(stdout.String())
		}
		if out != "" {
			return stdout.String(), fmt.Errorf("running %s: %w: %s", quoteArgs(name, args), err, out)
		}
		return stdout.String(), fmt.Errorf("running %s: %w", quoteArgs(name, args), err)
	}
	return stdout.String(), nil
}

// quoteArgs renders a command line for messages.
func quoteArgs(name string, args []string) string {
	var b strings.Builder
	b.WriteString(name)
	for _, a := range args {
		b.WriteByte(' ')
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$*?;&|<>()") {
			b.WriteString(shellQuote(a))
		} else {
			b.WriteString(a)
		}
	}
	return "`" + b.String() + "`"
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// inNetns runs fn on an OS thread that has entered network namespace ns
// (named as by `ip netns add`). Sockets fn opens live in ns for good and may
// be used from any goroutine afterwards.
//
// The thread is locked and never unlocked, so the Go runtime ends it when the
// goroutine returns instead of handing a thread in the wrong namespace to
// other goroutines (the trap described in containernetworking's pkg/ns
// README).
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(netnsDir + "/" + ns)
		if err != nil {
			errc <- fmt.Errorf("opening network namespace %q: %w", ns, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering network namespace %q: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// ErrNotYet is what a Poll condition returns (or wraps) while it is not
// met; Poll then tries again until its deadline.
var ErrNotYet = errors.New("not yet")

// Poll calls cond every interval until it returns nil, a hard error (not
// wrapping ErrNotYet), or the timeout passes. On timeout the error says what
// was awaited and the last reason cond gave.
func Poll(parent context.Context, what string, timeout, interval time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil || !errors.Is(err, ErrNotYet) {
			return err
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return fmt.Errorf("waiting for %s: %w", what, parent.Err())
			}
			return fmt.Errorf("waiting for %s: gave up after %s: %w", what, timeout, err)
		case <-tick.C:
		}
	}
}
