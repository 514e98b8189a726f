//go:build kernelfeatures

package feature

import "testing"

// TestDebianKernelHasThem: the kernel the hypervisors run (Debian's, in
// the harness) has every feature kvmnet checks for.
func TestDebianKernelHasThem(t *testing.T) {
	for f := range checks {
		if err := Check(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
