#!/bin/bash
# Runs, in Debian's stock kernel booted under qemu (internal/testutil/vmtest),
# the kernel test tier (every internal/ package with tests that need root:
# they use nstest or check for root) and every test built with the
# kernelfeatures tag, wherever it is. The test binaries are compiled here
# with `go test -c` and run from the host's filesystem, which the guest sees
# read-only: one boot for all of them.
#
#   scripts/test-kernel.sh [REGEXP]   # REGEXP: go test -run, for all packages
#
# The kernel is downloaded and unpacked once, into ~/.cache/kvmnet-vmtest
# (or $KVMNET_VMTEST_CACHE). Exits with the tests' status.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
run=${1:-}
out=bin/vmtest
rm -rf "$out"
mkdir -p "$out"
# The test binaries are large (about 100 MB together); the kernel stays
# cached.
# The time it took goes in the log: TCG makes this the slow part of
# make test, and its cost should stay visible.
trap 'rc=$?; rm -rf "$out"; echo "test-kernel: exit status $rc after ${SECONDS}s"; exit $rc' EXIT

pkgs=$( {
	grep -rlE --include='*_test.go' 'nstest\.|os\.Geteuid\(\)' internal
	grep -rlE --include='*.go' --exclude-dir=bin '^//go:build .*kernelfeatures' .
} | xargs -n1 dirname | sed 's|^\./||' | sort -u)

go build -o "$out/vmrun" ./internal/testutil/vmtest/vmrun
# make vet does not see files behind the tag.
go vet -tags kernelfeatures $(printf './%s ' $pkgs)

script="$out/guest.sh"
{
	echo 'failed=""'
	for p in $pkgs; do
		bin="$root/$out/$(echo "$p" | tr / _).test"
		go test -c -tags kernelfeatures -o "$bin" "./$p"
		# Tests read testdata relative to their package, as under go test.
		echo "echo '=== package $p'"
		echo "(cd '$root/$p' && '$bin' -test.v -test.count=1 -test.timeout=15m ${run:+-test.run '$run'}) || failed=\"\$failed $p\""
	done
	echo 'if [ -n "$failed" ]; then echo "FAIL in the Debian kernel:$failed"; exit 1; fi'
	echo 'echo "PASS in the Debian kernel: all packages"'
} >"$script"

echo "test-kernel: running in the Debian kernel: $(echo $pkgs)"
"$out/vmrun" -timeout 25m -- sh "$root/$script"
