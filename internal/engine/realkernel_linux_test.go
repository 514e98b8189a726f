package engine

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/kvmnet/kvmnet/internal/kernel"
	"github.com/kvmnet/kvmnet/internal/store"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// egressNS is a fresh namespace with an uplink eth0 (172.30.0.2/24, its
// peer eth0-peer left in the namespace).
func egressNS(t *testing.T) string {
	t.Helper()
	ns := nstest.New(t)
	nstest.Run(t, ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
	nstest.Run(t, ns, "ip", "link", "set", "eth0", "up")
	nstest.Run(t, ns, "ip", "addr", "add", "172.30.0.2/24", "dev", "eth0")
	return ns
}

// realEngine enters ns for good (see nstest.Enter: call it from the
// test's goroutine, and start no subtests after it) and returns an engine
// on its kernel with a store of its own, closed when the test ends.
func realEngine(t *testing.T, ns string) (*Engine, *kernel.Host) {
	t.Helper()
	nstest.Enter(t, ns)
	host, err := kernel.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(host.Close)
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, store.File))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &Engine{Store: st, Kernel: host, Log: slog.New(slog.DiscardHandler), Journal: filepath.Join(dir, "journal")}, host
}
