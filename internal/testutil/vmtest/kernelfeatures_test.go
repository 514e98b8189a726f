//go:build kernelfeatures

package vmtest

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// Tests built with the kernelfeatures tag run in Debian's stock kernel
// (make test-kernel): check that this one does, so that a harness that
// silently ran them elsewhere would fail here.
func TestRunsInDebianKernel(t *testing.T) {
	want := os.Getenv("KVMNET_VMTEST")
	if want == "" {
		t.Fatal("KVMNET_VMTEST is not set: kernelfeatures tests run in the guest (make test-kernel)")
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	if got := unix.ByteSliceToString(u.Release[:]); got != want {
		t.Fatalf("running in kernel %s, want Debian's %s", got, want)
	}
}

// 8021q and bridge VLAN filtering are what the CI kernel lacks: there, the
// vlan link fails with "Unknown device type" and the filtering bridge with
// "Operation not supported". The Debian kernel has both.
func TestVLANsAndVLANFiltering(t *testing.T) {
	ns := nstest.New(t)
	nstest.Run(t, ns, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	nstest.Run(t, ns, "ip", "link", "add", "link", "d0", "name", "d0.10", "type", "vlan", "id", "10")
	if out := nstest.Run(t, ns, "ip", "-d", "link", "show", "d0.10"); !strings.Contains(out, "vlan protocol 802.1Q id 10") {
		t.Errorf("d0.10 is not a VLAN 10 link:\n%s", out)
	}
	nstest.Run(t, ns, "ip", "link", "add", "br0", "type", "bridge", "vlan_filtering", "1")
	if out := nstest.Run(t, ns, "ip", "-d", "link", "show", "br0"); !strings.Contains(out, "vlan_filtering 1") {
		t.Errorf("br0 does not filter VLANs:\n%s", out)
	}
	nstest.Run(t, ns, "ip", "link", "set", "d0", "master", "br0")
	nstest.Run(t, ns, "bridge", "vlan", "add", "dev", "d0", "vid", "20")
	if out := nstest.Run(t, ns, "bridge", "vlan", "show", "dev", "d0"); !strings.Contains(out, "20") {
		t.Errorf("VLAN 20 is not on d0's port:\n%s", out)
	}
}
