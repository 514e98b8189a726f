package vmtest

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The initramfs loads modules with insmod, which resolves nothing: the
// order must put every module after what it needs, as modprobe would.
func TestModuleOrder(t *testing.T) {
	dir := t.TempDir()
	dep := `kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/fs/9p/9p.ko: kernel/fs/fscache/fscache.ko kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio_ring.ko
`
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := moduleOrder(dir, []string{"9pnet_virtio", "9p", "virtio_rng"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/drivers/virtio/virtio_ring.ko",
		"kernel/net/9p/9pnet.ko",
		"kernel/net/9p/9pnet_virtio.ko",
		"kernel/fs/netfs/netfs.ko",
		"kernel/fs/fscache/fscache.ko",
		"kernel/fs/9p/9p.ko",
		"kernel/drivers/char/hw_random/virtio-rng.ko",
	}
	if !slices.Equal(got, want) {
		t.Errorf("load order:\n got %q\nwant %q", got, want)
	}
	if _, err := moduleOrder(dir, []string{"virtio_pci"}); err == nil {
		t.Error("a module missing from modules.dep was not reported")
	}
}
