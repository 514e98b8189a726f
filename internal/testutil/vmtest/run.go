package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Options say how to run a command in the guest.
type Options struct {
	// Dir is the working directory in the guest (the host's path: the
	// guest sees the host's files at the same paths). Default: /.
	Dir string
	// Env is added to the command's environment, which otherwise holds
	// only PATH, HOME, LC_ALL=C and KVMNET_VMTEST=<kernel release>.
	Env []string
	// Memory is the guest's memory in MiB (default 2048); CPUs its
	// processors (default 2).
	Memory, CPUs int
	// QemuArgs are added to qemu's command line, e.g. a -netdev and its
	// -device.
	QemuArgs []string
	// Wrap runs qemu through another command, e.g. {"ip", "netns",
	// "exec", NS} to attach to a tap in namespace NS.
	Wrap []string
	// Files are written to /run/vmtest in the guest (a script, a
	// udhcpc hook), keyed by name. The host's /tmp is not what the guest
	// sees there (it has its own tmpfs), so files a test makes in
	// t.TempDir() must come this way.
	Files map[string][]byte
	// Output receives the console: the command's output, and the
	// kernel's messages if it has any to say. Default: os.Stdout.
	Output io.Writer
}

// Run boots kernel k, runs argv in the guest and returns its exit status.
// The error is non-nil only when the guest could not run the command to its
// end (qemu failed, the guest crashed, ctx was done); then the status is -1.
func Run(ctx context.Context, k *Kernel, opt Options, argv ...string) (int, error) {
	if len(argv) == 0 {
		return -1, errors.New("running in the guest: no command")
	}
	out := opt.Output
	if out == nil {
		out = os.Stdout
	}
	runDir, err := os.MkdirTemp("", "kvmnet-vmtest-run-")
	if err != nil {
		return -1, fmt.Errorf("running in the guest: %w", err)
	}
	defer os.RemoveAll(runDir)
	files := map[string][]byte{"cmd.sh": []byte(script(k, opt, argv))}
	for name, b := range opt.Files {
		if name != filepath.Base(name) || name == "cmd.sh" || name == "status" {
			return -1, fmt.Errorf("running in the guest: file name %q: want a plain name other than cmd.sh and status", name)
		}
		files[name] = b
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(runDir, name), b, 0o755); err != nil {
			return -1, fmt.Errorf("running in the guest: %w", err)
		}
	}

	qemu := qemuArgs(k, opt, runDir)
	args := append(append([]string{}, opt.Wrap...), qemu...)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = nil
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	// The serial line turns \n into \r\n; drop the \r so that the output
	// reads like the command's own.
	copied := make(chan error, 1)
	go func() {
		r := bufio.NewReader(pr)
		var err error
		for {
			var line []byte
			line, err = r.ReadBytes('\n')
			line = bytes.ReplaceAll(line, []byte("\r"), nil)
			if len(line) > 0 {
				if _, werr := out.Write(line); werr != nil && err == nil {
					err = werr
				}
			}
			if err != nil {
				break
			}
		}
		if err == io.EOF {
			err = nil
		}
		pr.CloseWithError(err)
		copied <- err
	}()
	runErr := cmd.Run()
	pw.Close()
	<-copied
	if ctx.Err() != nil {
		return -1, fmt.Errorf("running in the guest: %w", ctx.Err())
	}
	if runErr != nil {
		return -1, fmt.Errorf("running qemu: %w", runErr)
	}
	b, err := os.ReadFile(filepath.Join(runDir, "status"))
	if err != nil {
		return -1, fmt.Errorf("running in the guest: the guest stopped before the command ended (see its console above): %w", err)
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1, fmt.Errorf("running in the guest: reading the exit status: %w", err)
	}
	return code, nil
}

// script is the shell script the guest's init runs in the chroot.
func script(k *Kernel, opt Options, argv []string) string {
	var b strings.Builder
	b.WriteString("cd " + quote(cmp(opt.Dir, "/")) + " || exit 125\n")
	env := []string{
		"PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"LC_ALL=C",
		"KVMNET_VMTEST=" + k.Release,
	}
	b.WriteString("exec env -i")
	for _, e := range append(env, opt.Env...) {
		b.WriteString(" " + quote(e))
	}
	for _, a := range argv {
		b.WriteString(" " + quote(a))
	}
	b.WriteString("\n")
	return b.String()
}

func qemuArgs(k *Kernel, opt Options, runDir string) []string {
	mem, cpus := opt.Memory, opt.CPUs
	if mem == 0 {
		mem = 2048
	}
	if cpus == 0 {
		cpus = 2
	}
	acc, cpu := accel(), "max"
	if strings.HasPrefix(acc, "kvm") {
		// TCG's "max" names features KVM may refuse to set.
		cpu = "host"
	}
	virtfs := func(path, tag string, ro bool) []string {
		s := "local,path=" + path + ",mount_tag=" + tag + ",security_model=none,multidevs=remap"
		if ro {
			s += ",readonly=on"
		}
		return []string{"-virtfs", s}
	}
	args := []string{
		"qemu-system-x86_64",
		"-accel", acc,
		"-M", "pc", "-cpu", cpu,
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "stdio",
		"-kernel", k.vmlinuz(), "-initrd", k.initrd,
		// panic=-1: if init dies, the kernel resets and qemu exits
		// instead of hanging.
		"-append", "console=ttyS0 quiet panic=-1 rdinit=/init",
		"-device", "virtio-rng-pci",
	}
	args = append(args, virtfs("/", "kvmnet-root", true)...)
	args = append(args, virtfs(k.modules(), "kvmnet-modules", true)...)
	args = append(args, virtfs(runDir, "kvmnet-run", false)...)
	return append(args, opt.QemuArgs...)
}

// accel is TCG unless KVMNET_VMTEST_ACCEL says otherwise (e.g. "kvm"):
// CI machines have no usable KVM (nested KVM here refuses qemu's MSRs), and
// TCG keeps the harness's cost the same wherever it is measured.
func accel() string {
	if a := os.Getenv("KVMNET_VMTEST_ACCEL"); a != "" {
		return a
	}
	return "tcg,thread=multi"
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// quote quotes s for sh.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
