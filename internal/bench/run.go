package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kvmnet/kvmnet/internal/lab"
)

// run runs a command with LC_ALL=C and returns its stdout; a failure
// names the command and carries its output (see lab.Run).
func run(ctx context.Context, name string, args ...string) (string, error) {
	return lab.Run(ctx, name, args...)
}

// ipCmds runs `ip` commands in order and stops at the first failure.
func ipCmds(ctx context.Context, cmds ...[]string) error {
	for _, c := range cmds {
		if _, err := run(ctx, "ip", c...); err != nil {
			return err
		}
	}
	return nil
}

// inNS runs a command in namespace ns (`ip netns exec`).
func inNS(ctx context.Context, ns string, args ...string) (string, error) {
	return run(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

// listening reports whether process pid's network namespace has a socket
// bound to port (TCP in LISTEN state, or any UDP socket), read from
// /proc/PID/net as `ss` would.
func listening(pid int, proto string, port uint16) (bool, error) {
	want := fmt.Sprintf(":%04X", port)
	for _, file := range []string{proto, proto + "6"} {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/" + file)
		if err != nil {
			return false, err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 4 || !strings.HasSuffix(f[1], want) {
				continue
			}
			// st: 0A is TCP_LISTEN; a bound UDP socket shows 07 (CLOSE).
			if proto == "udp" || f[3] == "0A" {
				return true, nil
			}
		}
	}
	return false, nil
}

// daemonProc is a long-running process the bench started (an iperf3
// server, the kvmnet daemon, dnsmasq): it is stopped with SIGTERM, then
// SIGKILL.
type daemonProc struct {
	what string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, once done is closed
}

// startProc starts cmd and reaps it in the background.
func startProc(what string, cmd *exec.Cmd) (*daemonProc, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", what, err)
	}
	p := &daemonProc{what: what, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *daemonProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process: SIGTERM, and SIGKILL after grace.
func (p *daemonProc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// startDaemon starts `kvmnet --netns NS --state-dir DIR daemon`, its log in
// DIR/daemon.log, and waits until it serves DHCP: the daemon listens on its
// socket first and opens the DHCP servers once the stored file is applied,
// so a bound UDP port 67 means it is ready. The daemon re-executes itself in
// the namespace under the same pid, so /proc/PID/net is the namespace's.
func startDaemon(ctx context.Context, kvmnet, ns, stateDir string) (*daemonProc, error) {
	logPath := filepath.Join(stateDir, "daemon.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(kvmnet, "--netns", ns, "--state-dir", stateDir, "daemon", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	d, err := startProc("kvmnet daemon", cmd)
	if err != nil {
		return nil, err
	}
	err = lab.Poll(ctx, "the kvmnet daemon to serve DHCP", 20*time.Second, 20*time.Millisecond, func() error {
		if d.exited() {
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("the kvmnet daemon exited: %s", strings.TrimSpace(string(out)))
		}
		if ok, _ := listening(d.cmd.Process.Pid, "udp", 67); !ok {
			return lab.ErrNotYet
		}
		return nil
	})
	if err != nil {
		d.stop(5 * time.Second)
		return nil, fmt.Errorf("bench: %w", err)
	}
	return d, nil
}

// tearDown takes a bench's lab down (when it got that far) and removes its
// working directory, saying how to finish by hand if the lab resists.
func tearDown(l *lab.Lab, progress *Progress, prefix, dir string) error {
	var errs []error
	if l != nil {
		progress.Logf("tearing down lab %q", prefix)
		if err := l.Down(); err != nil {
			errs = append(errs, fmt.Errorf("%w; finish with `kvmnet lab down --prefix %s`", err, prefix))
		}
	}
	if dir != "" {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
