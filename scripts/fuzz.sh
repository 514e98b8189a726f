#!/usr/bin/env bash
# Runs every Go fuzz target of the tree for a while each (default 60s):
#   scripts/fuzz.sh [DURATION|COUNTx]   (e.g. 60s, or 100000x inputs)
# Targets are found, not listed: every Fuzz* function of every package.
# A failing input is written under the package's testdata/fuzz/ by go test
# itself and the script exits non-zero; check it in with the fix, so the
# corpus keeps it as a regression test that plain `go test` runs.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-60s}"
GO="${GO:-go}"
status=0
count=0
for pkg in $($GO list ./...); do
	dir=$($GO list -f '{{.Dir}}' "$pkg")
	grep -qs '^func Fuzz' "$dir"/*_test.go || continue
	for target in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		count=$((count + 1))
		echo "fuzz: $pkg $target for $fuzztime"
		if ! $GO test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/kvmnet-fuzz.$$ 2>&1; then
			cat /tmp/kvmnet-fuzz.$$
			status=1
		else
			grep "elapsed" /tmp/kvmnet-fuzz.$$ | tail -n 1 || true
		fi
	done
done
rm -f /tmp/kvmnet-fuzz.$$
if [ "$count" -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
echo "fuzz: $count targets, $([ $status -eq 0 ] && echo "no failures" || echo "FAILURES above")"
exit $status
