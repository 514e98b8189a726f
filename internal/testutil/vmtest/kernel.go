// Package vmtest boots Debian's stock kernel under qemu and runs a command
// in it, with this machine's own userspace shared read-only over virtio-9p.
// It lets tests exercise the kernel users run (bridge VLAN filtering,
// 8021q, flowtables, vhost-net, ...) when the machine running the tests has
// a kernel without them.
//
// The guest sees the host's root filesystem read-only with a tmpfs overlay
// on it, so writes (an /etc/resolv.conf from a DHCP client, /run/netns) stay
// in the guest's memory and vanish with it. The kernel's modules are shared
// at /lib/modules, so the host's modprobe loads them.
package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	_ "embed"
)

// Package is the Debian metapackage whose dependency is the kernel booted:
// the one `apt-get install linux-image-amd64` gives users.
const Package = "linux-image-amd64"

// bootModules are loaded by the initramfs before the root filesystem is
// mounted. Their dependencies are found in modules.dep and loaded first
// (9p needs netfs before fscache, for instance).
var bootModules = []string{"virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_net", "virtio_rng"}

//go:embed init.sh
var initScript []byte

// Kernel is an unpacked Debian kernel and the initramfs that boots it.
type Kernel struct {
	// Release is what uname -r says in the guest, e.g. "6.1.0-57-amd64".
	Release string
	// Package names the Debian package and version it came from.
	Package string
	// Dir is its entry in the cache.
	Dir string

	initrd string // set by ensureInitramfs
}

func (k *Kernel) vmlinuz() string { return filepath.Join(k.Dir, "vmlinuz") }

// modules is the directory shared as the guest's /lib/modules.
func (k *Kernel) modules() string { return filepath.Join(k.Dir, "modules") }

// CacheDir is where kernels are kept between runs: $KVMNET_VMTEST_CACHE,
// or kvmnet-vmtest in the user's cache directory (outside any checkout, so
// that every worktree shares one download).
func CacheDir() (string, error) {
	if d := os.Getenv("KVMNET_VMTEST_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding the cache directory: %w", err)
	}
	return filepath.Join(d, "kvmnet-vmtest"), nil
}

// Prepare returns the kernel that linux-image-amd64 currently depends on,
// downloading and unpacking it on first use. Entries are keyed by package
// and version, so a kernel update in the archive makes a new entry and
// an unchanged one is reused without network. Progress goes to log.
func Prepare(ctx context.Context, log io.Writer) (*Kernel, error) {
	root, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("creating the kernel cache: %w", err)
	}
	pkg, version, err := resolve(ctx)
	if err != nil {
		// Without package lists (no apt-get update yet, or no network),
		// any kernel already unpacked will do.
		if k, cerr := newestCached(root); cerr == nil {
			fmt.Fprintf(log, "vmtest: %v; using the cached %s\n", err, k.Package)
			return ready(k)
		}
		return nil, err
	}
	key := pkg + "_" + version
	dir := filepath.Join(root, key)
	if k, err := load(dir); err == nil {
		return ready(k)
	}
	fmt.Fprintf(log, "vmtest: unpacking %s %s into %s (once)\n", pkg, version, root)
	// Build in a private directory and rename it into place, so an
	// interrupted or concurrent build never leaves a half entry behind.
	tmp, err := os.MkdirTemp(root, ".build-")
	if err != nil {
		return nil, fmt.Errorf("preparing the kernel: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := build(ctx, tmp, pkg, version); err != nil {
		return nil, fmt.Errorf("preparing kernel %s %s: %w", pkg, version, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another run finished the same entry first: use it.
		if k, lerr := load(dir); lerr == nil {
			return ready(k)
		}
		return nil, fmt.Errorf("preparing the kernel: %w", err)
	}
	k, err := load(dir)
	if err != nil {
		return nil, err
	}
	return ready(k)
}

// ready finishes a kernel from the cache with its initramfs.
func ready(k *Kernel) (*Kernel, error) {
	if err := k.ensureInitramfs(); err != nil {
		return nil, err
	}
	return k, nil
}

// resolve asks apt which kernel package linux-image-amd64 depends on now.
func resolve(ctx context.Context) (pkg, version string, err error) {
	out, err := run(ctx, "", "apt-cache", "depends", "--no-recommends", "--no-suggests", Package)
	if err != nil {
		return "", "", fmt.Errorf("finding the kernel %s depends on: %w", Package, err)
	}
	for _, line := range strings.Split(out, "\n") {
		if dep, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: "); ok && strings.HasPrefix(dep, "linux-image-") {
			pkg = dep
			break
		}
	}
	if pkg == "" {
		return "", "", fmt.Errorf("finding the kernel %s depends on: no linux-image dependency (run apt-get update)", Package)
	}
	out, err = run(ctx, "", "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return "", "", fmt.Errorf("finding the version of %s: %w", pkg, err)
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Version: "); ok {
			return pkg, strings.TrimSpace(v), nil
		}
	}
	return "", "", fmt.Errorf("finding the version of %s: apt-cache show printed none", pkg)
}

// build fills dir with vmlinuz, modules/ and a release file.
func build(ctx context.Context, dir, pkg, version string) error {
	// apt-get download drops privileges to _apt where it can; the
	// directory is ours, so it warns and downloads as root instead.
	if _, err := run(ctx, dir, "apt-get", "download", "-q", pkg+"="+version); err != nil {
		return err
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("downloading %s: expected one .deb, found %d", pkg, len(debs))
	}
	unpacked := filepath.Join(dir, "root")
	if _, err := run(ctx, "", "dpkg-deb", "-x", debs[0], unpacked); err != nil {
		return err
	}
	os.Remove(debs[0])
	ents, err := os.ReadDir(filepath.Join(unpacked, "lib", "modules"))
	if err != nil || len(ents) != 1 {
		return fmt.Errorf("finding the kernel release in %s: %d entries, %v", pkg, len(ents), err)
	}
	release := ents[0].Name()
	// The package's postinst would run depmod; we unpack without it.
	if _, err := run(ctx, "", "depmod", "-b", unpacked, release); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(unpacked, "boot", "vmlinuz-"+release), filepath.Join(dir, "vmlinuz")); err != nil {
		return fmt.Errorf("finding the kernel image: %w", err)
	}
	if err := os.Rename(filepath.Join(unpacked, "lib", "modules"), filepath.Join(dir, "modules")); err != nil {
		return fmt.Errorf("keeping the modules: %w", err)
	}
	if err := os.RemoveAll(unpacked); err != nil {
		return fmt.Errorf("cleaning up: %w", err)
	}
	info := fmt.Sprintf("%s\n%s %s\n", release, pkg, version)
	return os.WriteFile(filepath.Join(dir, "release"), []byte(info), 0o644)
}

// load reads a finished cache entry.
func load(dir string) (*Kernel, error) {
	b, err := os.ReadFile(filepath.Join(dir, "release"))
	if err != nil {
		return nil, err
	}
	lines := strings.SplitN(strings.TrimSpace(string(b)), "\n", 2)
	if len(lines) != 2 {
		return nil, fmt.Errorf("reading %s: malformed release file", dir)
	}
	k := &Kernel{Release: lines[0], Package: lines[1], Dir: dir}
	if _, err := os.Stat(k.vmlinuz()); err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	return k, nil
}

// ensureInitramfs builds the initramfs for this kernel unless the cache has
// one made from the same init script, boot modules and busybox.
func (k *Kernel) ensureInitramfs() error {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return fmt.Errorf("building the initramfs: busybox is not installed: %w", err)
	}
	fi, err := os.Stat(busybox)
	if err != nil {
		return fmt.Errorf("building the initramfs: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s %d %d\n", initScript, strings.Join(bootModules, " "), busybox, fi.Size(), fi.ModTime().UnixNano())
	k.initrd = filepath.Join(k.Dir, fmt.Sprintf("initramfs-%x.cpio", h.Sum(nil)[:8]))
	if _, err := os.Stat(k.initrd); err == nil {
		return nil
	}
	tmp := k.initrd + fmt.Sprintf(".%d.tmp", os.Getpid())
	defer os.Remove(tmp)
	if err := writeInitramfs(tmp, busybox, filepath.Join(k.modules(), k.Release)); err != nil {
		return err
	}
	if err := os.Rename(tmp, k.initrd); err != nil {
		return fmt.Errorf("building the initramfs: %w", err)
	}
	return nil
}

func newestCached(root string) (*Kernel, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var best *Kernel
	var bestTime int64
	for _, e := range ents {
		k, err := load(filepath.Join(root, e.Name()))
		if err != nil {
			continue
		}
		if fi, err := os.Stat(filepath.Join(k.Dir, "release")); err == nil && fi.ModTime().UnixNano() > bestTime {
			best, bestTime = k, fi.ModTime().UnixNano()
		}
	}
	if best == nil {
		return nil, errors.New("no kernel in the cache")
	}
	return best, nil
}

// writeInitramfs writes the initramfs: busybox (and its libraries, if it
// is linked dynamically), the boot modules in load order, and init.sh as
// /init.
func writeInitramfs(path, busybox, modDir string) error {
	order, err := moduleOrder(modDir, bootModules)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing the initramfs: %w", err)
	}
	defer f.Close()
	bw := bufio.NewWriter(f)
	c := &cpioWriter{w: bw}
	for _, d := range []string{"bin", "dev", "proc", "sys", "lower", "rw", "newroot", "modules", "lib", "lib64", "lib/x86_64-linux-gnu"} {
		c.Dir(d)
	}
	if err := addFile(c, "bin/busybox", busybox, 0o755); err != nil {
		return err
	}
	libs, err := sharedLibs(busybox)
	if err != nil {
		return err
	}
	for _, lib := range libs {
		if err := addFile(c, strings.TrimPrefix(lib, "/"), lib, 0o755); err != nil {
			return err
		}
	}
	var names []string
	for _, rel := range order {
		name := filepath.Base(rel)
		if err := addFile(c, "modules/"+name, filepath.Join(modDir, rel), 0o644); err != nil {
			return err
		}
		names = append(names, name)
	}
	c.File("modules/order", 0o644, []byte(strings.Join(names, "\n")+"\n"))
	c.File("init", 0o755, initScript)
	if err := c.Close(); err != nil {
		return fmt.Errorf("writing the initramfs: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing the initramfs: %w", err)
	}
	return f.Close()
}

func addFile(c *cpioWriter, name, src string, perm uint32) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("writing the initramfs: %w", err)
	}
	c.File(name, perm, b)
	return nil
}

// sharedLibs lists the libraries a dynamic executable loads, by absolute
// path as ldd prints them (including the loader itself); none for a
// static one.
func sharedLibs(exe string) ([]string, error) {
	out, err := exec.Command("ldd", exe).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing the libraries of %s: %w: %s", exe, err, out)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		for _, field := range strings.Fields(line) {
			if strings.HasPrefix(field, "/") {
				libs = append(libs, field)
			}
		}
	}
	return libs, nil
}

// moduleOrder returns the files (relative to modDir) of the named modules
// and everything they depend on, each after its dependencies, from the
// modules.dep that depmod wrote.
func moduleOrder(modDir string, want []string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("reading the module dependencies: %w", err)
	}
	deps := map[string][]string{} // file -> files it needs
	byName := map[string]string{} // module name -> file
	for _, line := range strings.Split(string(b), "\n") {
		file, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		deps[file] = strings.Fields(rest)
		byName[modName(file)] = file
	}
	var order []string
	seen := map[string]bool{}
	var visit func(string)
	visit = func(file string) {
		if seen[file] {
			return
		}
		seen[file] = true
		// modules.dep lists dependencies with the last to load first,
		// as modprobe reads it.
		d := deps[file]
		for i := len(d) - 1; i >= 0; i-- {
			visit(d[i])
		}
		order = append(order, file)
	}
	for _, name := range want {
		file, ok := byName[strings.ReplaceAll(name, "-", "_")]
		if !ok {
			return nil, fmt.Errorf("finding module %s: not in modules.dep (built into the kernel?)", name)
		}
		visit(file)
	}
	return order, nil
}

func modName(file string) string {
	base := filepath.Base(file)
	base = strings.TrimSuffix(base, filepath.Ext(base)) // .xz, .zst
	base = strings.TrimSuffix(base, ".ko")
	return strings.ReplaceAll(base, "-", "_")
}

// run runs a command and returns its output, or an error naming the
// command with what it printed.
func run(ctx context.Context, dir string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("running %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
