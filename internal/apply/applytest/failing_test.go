package applytest

import (
	"errors"
	"reflect"
	"testing"

	"github.com/kvmnet/kvmnet/internal/apply"
	"github.com/kvmnet/kvmnet/internal/kernel/fake"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// TestEveryMethodInjects calls every method of every contract of
// apply.Kernel, found by reflection, on a Failing set to fail its first
// call: each must return ErrInjected and leave the kernel untouched. A
// method that passed straight through would escape the rollback tests.
func TestEveryMethodInjects(t *testing.T) {
	kt := reflect.TypeOf((*apply.Kernel)(nil)).Elem()
	if kt.NumMethod() < 20 {
		t.Fatalf("apply.Kernel has %d methods; the contracts lost some?", kt.NumMethod())
	}
	for i := range kt.NumMethod() {
		m := kt.Method(i)
		k := fake.New(&plan.Observed{})
		f := &Failing{K: k, N: 1}
		fn := reflect.ValueOf(f).MethodByName(m.Name)
		args := make([]reflect.Value, fn.Type().NumIn())
		for j := range args {
			args[j] = reflect.Zero(fn.Type().In(j))
		}
		if m.Name == "DeleteLinks" {
			args[0] = reflect.ValueOf([]string{"x"})
		}
		out := fn.Call(args)
		var err error
		switch v := out[len(out)-1].Interface().(type) {
		case error:
			err = v
		case []error:
			err = v[0]
		}
		if !errors.Is(err, ErrInjected) {
			t.Errorf("%s: %v, want the injected failure", m.Name, err)
		}
		if k.Calls != 0 {
			t.Errorf("%s reached the kernel although it was to fail", m.Name)
		}
	}
}
