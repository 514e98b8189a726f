#!/usr/bin/env bash
# The kernel layer owns netlink: only packages under internal/kernel may
# import github.com/vishvananda/netlink (or its nl subpackage). Everything
# else goes through their small verbs, bound to a namespace handle, so no
# socket is opened in the wrong namespace (STYLE.md, section 2). Tests of
# other packages are held to the same rule. .golangci.yml says the same to
# golangci-lint (make lint); this check needs nothing but go.
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
bad=$($GO list -tags e2e -f '{{.ImportPath}}: {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}' ./... |
	grep -v '^github.com/kvmnet/kvmnet/internal/kernel' |
	grep -E ' github\.com/vishvananda/netlink(/nl)?( |$)' | cut -d: -f1 || true)
if [ -n "$bad" ]; then
	echo "these packages import github.com/vishvananda/netlink outside internal/kernel (use internal/kernel/link instead):" >&2
	echo "$bad" >&2
	exit 1
fi
echo "imports: netlink only under internal/kernel"
