// Package feature finds out whether the running kernel can do what a
// configuration asks of it, before a plan relies on it. Each check tries
// the feature for real in a network namespace of its own, made for the
// check and gone with it, so the host's namespaces never see a trace of
// it; a module the feature needs is loaded by the kernel on the way, as it
// would be for the real thing. Results are kept for the life of the
// process: a kernel does not lose features, and one that gains a module
// later is seen by the next process.
package feature

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// check tries one feature in a scratch namespace: nil when the kernel has
// it, or the kernel's refusal.
type check func() error

// checks are the features this package can check, each by its own file.
var checks = map[plan.Feature]check{}

var (
	mu     sync.Mutex
	result = map[plan.Feature]error{}
)

// Check reports whether the kernel has f: nil when it has, otherwise an
// error saying what the kernel refused. The first check of a feature costs
// a namespace and a few netlink requests (a few milliseconds); later ones
// are free.
func Check(f plan.Feature) error {
	mu.Lock()
	defer mu.Unlock()
	if err, ok := result[f]; ok {
		return err
	}
	c, ok := checks[f]
	if !ok {
		return fmt.Errorf("kvmnet cannot check for %s", f)
	}
	err := inScratchNetns(c)
	result[f] = err
	return err
}

// Missing checks every feature of fs and returns, for each the kernel
// lacks, why.
func Missing(fs []plan.Feature) map[plan.Feature]string {
	var out map[plan.Feature]string
	for _, f := range fs {
		if err := Check(f); err != nil {
			if out == nil {
				out = map[plan.Feature]string{}
			}
			out[f] = err.Error()
		}
	}
	return out
}

// errNoScratch marks a failure to make the scratch namespace: that says
// nothing about the feature.
var errNoScratch = errors.New("making a scratch network namespace")

// inScratchNetns runs fn on an OS thread moved into a new, empty network
// namespace. The thread is never unlocked: the runtime ends it with the
// goroutine, so no other goroutine ever runs in that namespace (the trap
// containernetworking's pkg/ns describes), and the namespace goes with
// its last thread.
func inScratchNetns(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("%w: %v", errNoScratch, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
