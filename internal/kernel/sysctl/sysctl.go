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
