// Package netnsexec runs the rest of the process inside a named network
// namespace, the way `ip netns exec` does: enter the namespace on a locked OS
// thread, give the process its own mount namespace with /sys remounted for the
// new network namespace and /etc/netns/NAME files bound over /etc, then
// re-execute the binary. Every socket, netlink handle and child process of the
// new image then lives in the namespace; nothing switches namespaces on
// goroutines later (see the containernetworking pkg/ns README for why that is
// a trap).
package netnsexec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// envMarker is set in the re-executed process to the namespace it runs in, so
// Enter knows the work is done and does not loop.
const envMarker = "KVMNET_IN_NETNS"

// Dir is where `ip netns add` keeps namespace handles.
const Dir = "/run/netns"

// Inside reports the namespace the process was re-executed into, or "".
func Inside() string { return os.Getenv(envMarker) }

// Enter re-executes the running binary inside network namespace name. It
// returns nil without doing anything when the process already runs there;
// otherwise it only returns on error.
func Enter(name string) error {
	if Inside() == name {
		return nil
	}
	if name == "" || filepath.Base(name) != name {
		return fmt.Errorf("entering network namespace %q: not a plain name (want one listed by `ip netns list`)", name)
	}
	path := filepath.Join(Dir, name)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("entering network namespace %q: %s does not exist (create it with `ip netns add %s`)", name, path, name)
		}
		return fmt.Errorf("entering network namespace %q: %w", name, err)
	}
	defer f.Close()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("entering network namespace %q: finding own executable: %w", name, err)
	}

	// From here on this thread is changed for good; it is never unlocked,
	// and execve below replaces the whole process anyway.
	runtime.LockOSThread()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("entering network namespace %q: setns: %w", name, err)
	}
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("entering network namespace %q: unshare mount namespace: %w", name, err)
	}
	// Keep our mounts to ourselves (as ip netns exec does).
	if err := unix.Mount("", "/", "none", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("entering network namespace %q: making / a slave mount: %w", name, err)
	}
	// /sys shows the network devices of the namespace that mounted it:
	// mount a fresh sysfs so /sys/class/net is this namespace's.
	if err := unix.Unmount("/sys", unix.MNT_DETACH); err == nil {
		if err := unix.Mount(name, "/sys", "sysfs", 0, ""); err != nil {
			return fmt.Errorf("entering network namespace %q: mounting /sys: %w", name, err)
		}
	}
	if err := bindEtc(name); err != nil {
		return err
	}
	env := append(os.Environ(), envMarker+"="+name)
	err = syscall.Exec(exe, os.Args, env)
	return fmt.Errorf("entering network namespace %q: re-executing %s: %w", name, exe, err)
}

// bindEtc binds every file of /etc/netns/NAME over the same name in /etc,
// like ip netns exec, so a namespace can have its own resolv.conf.
func bindEtc(name string) error {
	dir := filepath.Join("/etc/netns", name)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil // nothing to bind
	}
	for _, e := range entries {
		src := filepath.Join(dir, e.Name())
		dst := filepath.Join("/etc", e.Name())
		if err := unix.Mount(src, dst, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("entering network namespace %q: binding %s over %s: %w", name, src, dst, err)
		}
	}
	return nil
}
