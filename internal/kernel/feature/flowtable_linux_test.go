package feature

import (
	"strings"
	"testing"

	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// TestFlowtableAgreesWithNft: the flowtable check says what nft itself
// finds when it makes a flowtable in a namespace of its own. On this CI
// kernel, which has no flowtables, that is a refusal with the kernel's
// reason (what a plan with fastpath: true reports); in Debian's kernel,
// presence.
func TestFlowtableAgreesWithNft(t *testing.T) {
	ns := nstest.New(t)
	nstest.Run(t, ns, "ip", "link", "add", "ft0", "type", "veth", "peer", "name", "ft1")
	cmd := nstest.Command(t.Context(), ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader("add table inet probe\nadd flowtable inet probe f { hook ingress priority filter ; counter ; devices = { ft0 } ; }\n")
	out, nftErr := cmd.CombinedOutput()
	err := Check(plan.FeatureFlowtable)
	t.Logf("nft: %v %s; Check: %v", nftErr, strings.TrimSpace(string(out)), err)
	switch {
	case nftErr != nil && err == nil:
		t.Errorf("nft could not make a flowtable (%v: %s), but the check found flowtables", nftErr, out)
	case nftErr == nil && err != nil:
		t.Errorf("nft made a flowtable, but the check says: %v", err)
	case err != nil && !strings.Contains(err.Error(), "flowtable"):
		t.Errorf("the refusal does not say what was refused: %v", err)
	}
	if why := Missing([]plan.Feature{plan.FeatureFlowtable})[plan.FeatureFlowtable]; (why != "") != (err != nil) {
		t.Errorf("Missing says %q, Check %v", why, err)
	}
}
