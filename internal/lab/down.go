package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Down stops the lab with the given prefix and removes all of it. It works
// from what it finds, not from what the lab recorded, so it also cleans up
// after a crash or an interrupted Up, and a second call does nothing:
//
//  1. stop the processes whose pid files are in the lab directory (after
//     checking that they still run a lab command line),
//  2. stop every process left in the lab's namespaces (found as
//     `ip netns pids` finds them), such as a `kvmnet --netns PREFIX-host
//     daemon`,
//  3. delete every namespace named PREFIX-*, which deletes their links,
//     and look once more for processes that entered one meanwhile,
//  4. remove /etc/netns/PREFIX-*, kvmnet's state and socket of those
//     namespaces, and the lab directory.
//
// It keeps going after errors and returns them all.
func Down(prefix string) error {
	return down(prefix, slog.New(slog.DiscardHandler))
}

func down(prefix string, log *slog.Logger) error {
	if err := ValidatePrefix(prefix); err != nil {
		return err
	}
	dir := labDir(prefix)
	others := labsOnDisk()
	var errs []error

	errs = append(errs, stopRecorded(dir, log))

	nss, err := labNamespacesExcept(prefix, others)
	errs = append(errs, err)
	ids := map[nsID]string{}
	for _, ns := range nss {
		if id, err := netnsID(filepath.Join(netnsDir, ns)); err == nil {
			ids[id] = ns
		}
	}
	errs = append(errs, stopInNamespaces(ids, log))
	for _, ns := range nss {
		if _, err := run(context.Background(), "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		} else {
			log.Debug("namespace deleted", "namespace", ns)
		}
	}
	// A process that entered a namespace while the sweep above ran (an
	// `ip netns exec` between its open and its setns) keeps the namespace
	// alive with no name left to find it by; sweep again by identity.
	errs = append(errs, stopInNamespaces(ids, log))

	// Per-namespace files: what `ip netns exec` binds over /etc, and
	// kvmnet's own state dir and socket for `--netns PREFIX-...`.
	errs = append(errs,
		removeMatching(etcNetns, prefix, others, func(fs.DirEntry) bool { return true }),
		removeMatching(kvmnetStateNetns, prefix, others, func(e fs.DirEntry) bool { return e.IsDir() }),
		removeMatching(kvmnetRunDir, prefix, others, func(e fs.DirEntry) bool {
			return e.Type()&fs.ModeSocket != 0 && strings.HasSuffix(e.Name(), ".sock")
		}),
	)
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("removing lab directory: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tearing down lab %q: %w", prefix, err)
	}
	log.Debug("lab is down")
	return nil
}

// stopRecorded stops the processes of the pid files in dir.
func stopRecorded(dir string, log *slog.Logger) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.pid"))
	if err != nil {
		return err
	}
	var procs []proc
	var errs []error
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			errs = append(errs, fmt.Errorf("reading pid file %s: not a pid: %q", f, strings.TrimSpace(string(b))))
			continue
		}
		what := strings.TrimSuffix(filepath.Base(f), ".pid")
		p, ok, err := openProc(pid, what, cmdlineContains(dir))
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok:
			procs = append(procs, p)
			log.Debug("stopping recorded process", "pid", pid, "what", what)
		}
	}
	return errors.Join(append(errs, stopProcs(procs, log))...)
}

// stopInNamespaces stops every process running in the namespaces.
func stopInNamespaces(ids map[nsID]string, log *slog.Logger) error {
	var procs []proc
	var errs []error
	self := os.Getpid()
	for pid, id := range pidsInNetns(ids) {
		if pid <= 1 || pid == self {
			continue
		}
		ns := ids[id]
		p, ok, err := openProc(pid, "process in namespace "+ns, inNetnsID(id, ns))
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok:
			procs = append(procs, p)
			log.Debug("stopping process left in namespace", "pid", pid, "namespace", ns)
		}
	}
	return errors.Join(append(errs, stopProcs(procs, log))...)
}

// labNamespaces lists the namespaces of lab prefix.
func labNamespaces(prefix string) ([]string, error) {
	return labNamespacesExcept(prefix, labsOnDisk())
}

func labNamespacesExcept(prefix string, others []string) ([]string, error) {
	all, err := namespaces()
	var mine []string
	for _, ns := range all {
		if belongsTo(prefix, ns, others) {
			mine = append(mine, ns)
		}
	}
	return mine, err
}

// removeMatching removes the entries of dir that belong to lab prefix and
// satisfy keep. A missing dir is fine.
func removeMatching(dir, prefix string, others []string, keep func(fs.DirEntry) bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range entries {
		if belongsTo(prefix, e.Name(), others) && keep(e) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
