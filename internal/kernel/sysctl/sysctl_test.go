package sysctl

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWritable: a sysctl shown as 0444 (global ones outside the initial
// namespace) is read-only, 0644 writable, a missing one an error.
func TestWritable(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "net", "netfilter")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"nf_conntrack_max": 0o444, "nf_conntrack_udp_timeout": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("30\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	s := &Sysctl{Root: root}
	for key, want := range map[string]bool{"net.netfilter.nf_conntrack_max": false, "net.netfilter.nf_conntrack_udp_timeout": true} {
		if got, err := s.Writable(key); err != nil || got != want {
			t.Errorf("Writable(%s) = %t, %v; want %t", key, got, err, want)
		}
	}
	if _, err := s.Writable("net.netfilter.nf_conntrack_buckets"); err == nil {
		t.Error("a missing sysctl is writable")
	}
	if mem, err := MemTotal(); err != nil || mem < 64<<20 {
		t.Errorf("MemTotal = %d, %v", mem, err)
	}
}
