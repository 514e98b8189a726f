package feature

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// configOption is the kernel build option each VLAN feature needs.
var configOption = map[plan.Feature]string{
	plan.FeatureBridgeVLAN: "CONFIG_BRIDGE_VLAN_FILTERING",
	plan.FeatureVLAN:       "CONFIG_VLAN_8021Q",
}

// TestVLANFeaturesMatchKernelConfig: Check reports bridge VLAN filtering
// and 802.1Q present exactly when the running kernel was built with them
// (/proc/config.gz). On this CI kernel both are missing, so this is the
// real-kernel half of the refusal at plan time: Missing gives the
// kernel's own reason, which the plan quotes at the key.
func TestVLANFeaturesMatchKernelConfig(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	config := kernelConfig(t)
	for f, opt := range configOption {
		built := strings.Contains(config, "\n"+opt+"=y") || strings.Contains(config, "\n"+opt+"=m")
		err := Check(f)
		t.Logf("%s (%s built: %t): %v", f, opt, built, err)
		switch {
		case built && err != nil:
			t.Errorf("%s: the kernel is built with %s, yet the check failed: %v", f, opt, err)
		case !built && err == nil:
			t.Errorf("%s: the kernel is built without %s, yet the check found it", f, opt)
		case !built:
			if why := Missing([]plan.Feature{f})[f]; why == "" || strings.Contains(why, errNoScratch.Error()) {
				t.Errorf("%s: missing without the kernel's reason: %q", f, why)
			}
		}
	}
}

func kernelConfig(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("/proc/config.gz")
	if err != nil {
		t.Skipf("the kernel's build configuration is not readable: %v", err)
	}
	r, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return "\n" + string(b)
}
