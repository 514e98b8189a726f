// Command vmrun runs a command in Debian's stock kernel under qemu (see
// package vmtest) and exits with its status:
//
//	vmrun [-dir DIR] [-env K=V]... [-timeout D] -- COMMAND [ARG]...
//
// scripts/test-kernel.sh uses it to run the kernel-feature tests.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kvmnet/kvmnet/internal/testutil/vmtest"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	var env list
	dir := flag.String("dir", "", "working directory in the guest (default /)")
	timeout := flag.Duration("timeout", 20*time.Minute, "stop the guest after this long")
	mem := flag.Int("mem", 0, "guest memory in MiB (default 2048)")
	cpus := flag.Int("cpus", 0, "guest processors (default 2)")
	flag.Var(&env, "env", "K=V added to the command's environment (repeatable)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: vmrun [flags] -- COMMAND [ARG]...")
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, *timeout)
	defer cancel()
	k, err := vmtest.Prepare(ctx, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmrun:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "vmrun: booting %s (%s)\n", k.Release, k.Package)
	code, err := vmtest.Run(ctx, k, vmtest.Options{Dir: *dir, Env: env, Memory: *mem, CPUs: *cpus}, flag.Args()...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmrun:", err)
		os.Exit(1)
	}
	os.Exit(code)
}
