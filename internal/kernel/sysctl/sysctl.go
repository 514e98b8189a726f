// Package sysctl reads and writes kernel parameters under /proc/sys. Paths
// under /proc/sys/net belong to the network namespace of the process that
// opens them, so a process re-executed inside a namespace sees its own.
package sysctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Root is where sysctls live; a test may point a Sysctl elsewhere.
const Root = "/proc/sys"

// Sysctl reads and writes keys in dotted form (net.ipv4.ip_forward).
type Sysctl struct{ Root string }

// New returns a Sysctl on /proc/sys.
func New() *Sysctl { return &Sysctl{Root: Root} }

func (s *Sysctl) path(key string) string {
	return filepath.Join(s.Root, strings.ReplaceAll(key, ".", "/"))
}

// Get returns the value of key, trimmed.
func (s *Sysctl) Get(key string) (string, error) {
	b, err := os.ReadFile(s.path(key))
	if err != nil {
		return "", fmt.Errorf("reading sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Set writes value to key (`sysctl -w KEY=VALUE`).
func (s *Sysctl) Set(key, value string) error {
	if err := os.WriteFile(s.path(key), []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// Writable reports whether key can be written here. The kernel shows a
// sysctl that is global to the machine as mode 0444 in every network
// namespace but the initial one (nf_conntrack_max and _buckets on recent
// kernels), and refuses writes to it even from root.
func (s *Sysctl) Writable(key string) (bool, error) {
	fi, err := os.Stat(s.path(key))
	if err != nil {
		return false, fmt.Errorf("reading sysctl %s: %w", key, err)
	}
	return fi.Mode().Perm()&0o222 != 0, nil
}

// MemTotal returns the machine's memory in bytes, from /proc/meminfo.
func MemTotal() (uint64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("reading memory size: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("reading memory size: %q: %w", line, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("reading memory size: no MemTotal in /proc/meminfo")
}
