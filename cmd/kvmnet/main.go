// Command kvmnet manages the networking of a KVM host from one declarative
// file: bridged and NAT networks, VM interfaces, port forwards and port
// security. See `kvmnet --help`.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "kvmnet: "+err.Error())
		os.Exit(1)
	}
}
