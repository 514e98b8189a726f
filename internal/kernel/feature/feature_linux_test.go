package feature

import (
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// TestChecksLeaveNoTrace runs every check on the running kernel: each
// gives an answer (present, or the kernel's refusal naming what was
// tried), the same answer twice, and nothing of it is left in the
// namespace the test runs in. Which features this kernel has is the
// kernelfeatures tests' question (Debian's kernel has them all).
func TestChecksLeaveNoTrace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	before, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for f := range checks {
		err := Check(f)
		t.Logf("%s: %v", f, err)
		if err != nil && strings.Contains(err.Error(), errNoScratch.Error()) {
			t.Errorf("%s: the check itself failed: %v", f, err)
		}
		if again := Check(f); (again == nil) != (err == nil) {
			t.Errorf("%s: %v, then %v", f, err, again)
		}
	}
	after, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("links before the checks: %d, after: %d", len(before), len(after))
	}
	for _, l := range after {
		if strings.HasPrefix(l.Attrs().Name, "kvprobe") {
			t.Errorf("link %s left behind", l.Attrs().Name)
		}
	}
	missing := Missing([]plan.Feature{plan.FeatureBridgeVLAN, plan.FeatureVLAN, plan.FeatureFlowtable})
	for f, why := range missing {
		if why == "" {
			t.Errorf("%s missing without a reason", f)
		}
	}
	if Check("no such feature") == nil {
		t.Error("an unknown feature checked as present")
	}
}
