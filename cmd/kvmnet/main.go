// Command kvmnet manages the networking of a KVM host from one declarative
// file: bridged and NAT networks, VM interfaces, port forwards and port
// security. See `kvmnet --help`.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/store"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		// A command that ends with a code of its own (doctor) has
		// printed what it found; only its own failure is an error.
		var ec exitCode
		if errors.As(err, &ec) {
			if ec.err != nil {
				fmt.Fprintln(os.Stderr, "kvmnet: "+ec.err.Error())
			}
			os.Exit(ec.code)
		}
		fmt.Fprintln(os.Stderr, "kvmnet: "+err.Error())
		if store.IsCorrupt(err) || errors.As(err, new(damaged)) || errors.As(err, new(*engine.StateLostError)) {
			os.Exit(exitDamaged)
		}
		os.Exit(1)
	}
}
