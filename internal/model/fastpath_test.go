package model

import (
	"path/filepath"
	"testing"
)

// TestFastpathDefault: host: fastpath: is the default of every nat
// network; a network's own fastpath: wins; bridged networks have none.
func TestFastpathDefault(t *testing.T) {
	c, err := Load(filepath.Join(repoRoot, "testdata/good/fastpath.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, n := range c.Networks {
		got[n.Name] = n.Fastpath
	}
	want := map[string]bool{"lan": false, "dev": true, "lab": false}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("network %s: fastpath %t, want %t", name, got[name], w)
		}
	}
	if !c.Host.Fastpath {
		t.Error("host.fastpath not read")
	}
}
