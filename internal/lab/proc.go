package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// How long stopping processes may take: SIGTERM first, so a kvmnet daemon
// can shut down cleanly, then SIGKILL for what is left.
const (
	termGrace = 5 * time.Second
	killGrace = 2 * time.Second
)

// proc is a process held by a pidfd, so signals can never reach another
// process that reused its pid.
type proc struct {
	pid  int
	fd   int
	what string // for messages, e.g. "dnsmasq of lab kvl"
}

// openProc takes hold of pid, then runs check on /proc/PID. It returns
// ok=false, without error, when the process is already gone.
func openProc(pid int, what string, check func(pid int) error) (p proc, ok bool, err error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return proc{}, false, nil
		}
		return proc{}, false, fmt.Errorf("opening process %d (%s): %w", pid, what, err)
	}
	p = proc{pid: pid, fd: fd, what: what}
	if err := check(pid); err != nil {
		unix.Close(fd)
		if errors.Is(err, os.ErrNotExist) {
			return proc{}, false, nil // exited between the two steps
		}
		return proc{}, false, err
	}
	// The check read /proc/PID; if the process had exited and its pid been
	// reused meanwhile, the check saw the newcomer. An exited process makes
	// its pidfd readable, so make sure ours still runs.
	if exited(fd, 0) {
		unix.Close(fd)
		return proc{}, false, nil
	}
	return p, true, nil
}

// cmdlineContains is an openProc check: the process's command line must
// contain s (the lab's directory appears in the arguments of every process
// the lab starts).
func cmdlineContains(s string) func(pid int) error {
	return func(pid int) error {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte(s)) {
			cmd := strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
			return fmt.Errorf("process %d runs %q, not a process of the lab (its arguments lack %s); leaving it alone", pid, cmd, s)
		}
		return nil
	}
}

// inNamespace is an openProc check: the process must still be in network
// namespace ns.
func inNamespace(ns string) func(pid int) error {
	return func(pid int) error {
		var want, got unix.Stat_t
		if err := unix.Stat(netnsDir+"/"+ns, &want); err != nil {
			return fmt.Errorf("reading namespace %q: %w", ns, err)
		}
		if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/ns/net", &got); err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
				return os.ErrNotExist
			}
			return fmt.Errorf("reading network namespace of process %d: %w", pid, err)
		}
		if want.Dev != got.Dev || want.Ino != got.Ino {
			return fmt.Errorf("process %d left namespace %q; leaving it alone", pid, ns)
		}
		return nil
	}
}

// exited reports whether the process behind pidfd fd has exited, waiting at
// most timeout. A zombie counts as exited: its parent reaps it, not us.
func exited(fd int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms < 0 {
			ms = 0
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// stopProcs sends SIGTERM to every process, waits for them to exit until
// termGrace passes, sends SIGKILL to the rest and waits killGrace more. It
// closes every pidfd and reports the processes that would not die.
func stopProcs(procs []proc) error {
	defer func() {
		for _, p := range procs {
			unix.Close(p.fd)
		}
	}()
	left := signalAll(procs, unix.SIGTERM)
	left = waitAll(left, termGrace)
	if len(left) == 0 {
		return nil
	}
	left = waitAll(signalAll(left, unix.SIGKILL), killGrace)
	var errs []error
	for _, p := range left {
		errs = append(errs, fmt.Errorf("stopping process %d (%s): still running %s after SIGKILL", p.pid, p.what, killGrace))
	}
	return errors.Join(errs...)
}

// signalAll signals each process and returns those that may still run.
func signalAll(procs []proc, sig unix.Signal) []proc {
	var left []proc
	for _, p := range procs {
		if err := unix.PidfdSendSignal(p.fd, sig, nil, 0); err == nil {
			left = append(left, p)
		}
		// ESRCH: gone already.
	}
	return left
}

// waitAll waits until the processes have exited or timeout passes, and
// returns those still running.
func waitAll(procs []proc, timeout time.Duration) []proc {
	deadline := time.Now().Add(timeout)
	for len(procs) > 0 {
		ms := int(time.Until(deadline).Milliseconds())
		if ms <= 0 {
			break
		}
		fds := make([]unix.PollFd, len(procs))
		for i, p := range procs {
			fds[i] = unix.PollFd{Fd: int32(p.fd), Events: unix.POLLIN}
		}
		if _, err := unix.Poll(fds, ms); err != nil && err != unix.EINTR {
			break
		}
		var left []proc
		for i, p := range procs {
			if fds[i].Revents == 0 {
				left = append(left, p)
			}
		}
		procs = left
	}
	// One last look without waiting, for exits that raced the deadline.
	var left []proc
	for _, p := range procs {
		if !exited(p.fd, 0) {
			left = append(left, p)
		}
	}
	return left
}
