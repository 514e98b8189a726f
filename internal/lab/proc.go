package lab

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
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
	what string // for messages, e.g. "dnsmasq"
}

// errNotOurs is what an openProc check returns for a process that is no
// longer the lab's (its pid was reused, or it left the namespace): it is
// left alone, and that is no error.
var errNotOurs = errors.New("not a process of the lab")

// openProc takes hold of pid, then runs check on /proc/PID. It returns
// ok=false, without error, when the process is already gone or the check
// finds it is not the lab's.
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
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, errNotOurs) {
			return proc{}, false, nil // exited between the two steps, or not ours
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
			return fmt.Errorf("process %d runs %q, whose arguments lack %s: %w", pid, cmd, s, errNotOurs)
		}
		return nil
	}
}

// nsID identifies a network namespace: the device and inode of its nsfs
// file. It outlives the namespace's name, so processes that still hold a
// deleted namespace can be found by it.
type nsID struct{ dev, ino uint64 }

// netnsID returns the identity of the namespace behind path (/run/netns/NAME
// or /proc/PID/ns/net).
func netnsID(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

// pidsInNetns scans /proc, as `ip netns pids` does, for processes in any of
// the namespaces and returns them with their namespace. Unlike
// `ip netns pids`, it still finds them once the names are deleted.
func pidsInNetns(ids map[nsID]string) map[int]nsID {
	found := map[int]nsID{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return found
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		id, err := netnsID("/proc/" + e.Name() + "/ns/net")
		if err != nil {
			continue // exited, or a kernel thread
		}
		if _, ok := ids[id]; ok {
			found[pid] = id
		}
	}
	return found
}

// inNetnsID is an openProc check: the process must still be in namespace id.
func inNetnsID(id nsID, ns string) func(pid int) error {
	return func(pid int) error {
		got, err := netnsID("/proc/" + strconv.Itoa(pid) + "/ns/net")
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
				return os.ErrNotExist
			}
			return fmt.Errorf("reading network namespace of process %d: %w", pid, err)
		}
		if got != id {
			return fmt.Errorf("process %d left namespace %q: %w", pid, ns, errNotOurs)
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
func stopProcs(procs []proc, log *slog.Logger) error {
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
	for _, p := range left {
		log.Warn("process still runs after SIGTERM; sending SIGKILL", "pid", p.pid, "what", p.what, "waited", termGrace)
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
