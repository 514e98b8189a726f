package kernel

import (
	"strings"
	"testing"

	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// TestHostRefusesOtherThreads: a Host opened in a test namespace, used from
// a goroutine that is not in it, must refuse everything that acts in the
// calling thread's namespace (nft, sysctl, taps) instead of changing the
// machine's own network.
func TestHostRefusesOtherThreads(t *testing.T) {
	ns := nstest.New(t)
	var h *Host
	nstest.Do(t, ns, func() {
		var err error
		if h, err = Open(); err != nil {
			t.Error(err)
		}
	})
	if h == nil {
		t.FailNow()
	}
	defer h.Close()
	// This goroutine is in the machine's namespace.
	for what, err := range map[string]error{
		"sysctl": h.SetSysctl(plan.SysctlIPForward, "1"),
		"tap":    h.AddTap("kvt-never", plan.TapSpec{}, ""),
		"nft":    h.NftRestore(t.Context(), ""),
	} {
		if err == nil || !strings.Contains(err.Error(), "not in the network namespace") {
			t.Errorf("%s from another namespace: %v, want a refusal", what, err)
		}
	}
	if _, err := h.Observe(t.Context()); err == nil {
		t.Error("observe from another namespace worked")
	}
}
