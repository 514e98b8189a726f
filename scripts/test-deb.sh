#!/bin/sh
# test-deb.sh [DEB]: builds the kvmnet package (scripts/build-deb.sh) unless
# given one, and checks it without changing this machine:
#
#  1. the package: control fields, owners and modes, md5sums, conffiles;
#  2. its files, unpacked with dpkg-deb -x: the binary runs, every command
#     has a man page, the bash, zsh and fish completions parse (with the
#     shells themselves), the example host file plans;
#  3. install, remove and purge with dpkg on a throwaway copy of this
#     machine (an overlay over / in a private mount namespace, discarded at
#     the end), with `systemd-analyze verify` of the installed unit; zsh
#     and fish, when this machine lacks them, are installed there (apt-get)
#     to parse their completions;
#  4. the daemon as the unit starts it (ExecStart), inside a network
#     namespace made for the test: it answers on its socket, applies the
#     example through it, and stops cleanly on SIGTERM.
#
# Steps 2 (plan, and zsh and fish when this machine lacks them), 3 and 4
# need root; without it they are skipped, and the run says so. Every
# namespace and mount it makes is gone when it exits.
set -eu

cd "$(dirname "$0")/.."
work=$(mktemp -d)
suffix=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
host_ns=kvt-deb-h-$suffix
lan_ns=kvt-deb-l-$suffix
daemon_pid=
cleanup() {
	[ -z "$daemon_pid" ] || kill "$daemon_pid" 2>/dev/null || true
	ip netns del "$host_ns" 2>/dev/null || true
	ip netns del "$lan_ns" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
	echo "test-deb: FAIL: $*" >&2
	exit 1
}
ok() { echo "test-deb: ok: $*"; }
root=no
[ "$(id -u)" != 0 ] || root=yes

if [ $# -ge 1 ]; then
	deb=$1
else
	deb=$(./scripts/build-deb.sh "$work/out")
fi
echo "test-deb: checking $deb"

# 1. The package.
[ "$(dpkg-deb --field "$deb" Package)" = kvmnet ] || fail "Package is not kvmnet"
[ "$(dpkg-deb --field "$deb" Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture is not $(dpkg --print-architecture)"
depends=$(dpkg-deb --field "$deb" Depends)
for d in nftables iproute2; do
	echo "$depends" | tr ',' '\n' | grep -qx " *$d *" || fail "Depends ($depends) lacks $d"
done
ok "control: $(dpkg-deb --field "$deb" Package Version Architecture Depends | tr '\n' ' ')"

dpkg-deb --contents "$deb" >"$work/contents"
awk '$2 != "root/root" { print; bad = 1 } END { exit bad }' "$work/contents" || fail "entries not owned by root/root (above)"
for want in \
	'-rwxr-xr-x ./usr/sbin/kvmnet' \
	'-rw-r--r-- ./lib/systemd/system/kvmnet.service' \
	'-rw-r--r-- ./etc/default/kvmnet' \
	'-rw-r--r-- ./etc/kvmnet/host.yaml.example' \
	'-rw-r--r-- ./usr/share/man/man8/kvmnet.8.gz' \
	'-rw-r--r-- ./usr/share/man/man8/kvmnet-daemon.8.gz' \
	'-rw-r--r-- ./usr/share/bash-completion/completions/kvmnet' \
	'-rw-r--r-- ./usr/share/zsh/vendor-completions/_kvmnet' \
	'-rw-r--r-- ./usr/share/fish/vendor_completions.d/kvmnet.fish' \
	'-rw-r--r-- ./usr/share/doc/kvmnet/copyright' \
	'-rw-r--r-- ./usr/share/doc/kvmnet/changelog.gz' \
	'-rw-r--r-- ./usr/share/doc/kvmnet/examples/grafana/kvmnet-dashboard.json'; do
	mode=${want%% *}
	path=${want#* }
	awk -v m="$mode" -v p="$path" '$1 == m && $6 == p { found = 1 } END { exit !found }' "$work/contents" ||
		fail "no $path with mode $mode in the package"
done
ok "contents: $(wc -l <"$work/contents") entries, all root/root, expected paths and modes"

x=$work/x
dpkg-deb -x "$deb" "$x"
dpkg-deb -e "$deb" "$x/DEBIAN"
(cd "$x" && md5sum --check --quiet DEBIAN/md5sums) || fail "md5sums do not match"
for c in $(cat "$x/DEBIAN/conffiles"); do
	[ -f "$x$c" ] || fail "conffile $c is not in the package"
done
grep -qx /etc/kvmnet/host.yaml.example "$x/DEBIAN/conffiles" || fail "host.yaml.example is not a conffile"
for s in postinst prerm postrm; do
	sh -n "$x/DEBIAN/$s" || fail "$s does not parse"
done
ok "md5sums, conffiles ($(tr '\n' ' ' <"$x/DEBIAN/conffiles")), maintainer scripts"

# 2. The files.
kvmnet=$x/usr/sbin/kvmnet
"$kvmnet" --help | grep -q '^Usage:' || fail "kvmnet --help prints no usage"
if command -v file >/dev/null 2>&1; then
	file "$kvmnet" | grep -q 'statically linked' || fail "kvmnet is not statically linked: $(file "$kvmnet")"
fi
# Every command, as `kvmnet help` lists them, has its page.
for c in $("$kvmnet" --help | awk '/^Available Commands:/ { on = 1; next } on && NF == 0 { on = 0 } on { print $1 }'); do
	[ "$c" = help ] && continue
	[ -f "$x/usr/share/man/man8/kvmnet-$c.8.gz" ] || fail "no man page for kvmnet $c"
done
for page in "$x"/usr/share/man/man8/*.8.gz; do
	gzip -t "$page" || fail "$page is not gzip"
	zcat "$page" | grep -q '^\.TH "KVMNET' || fail "$page has no .TH header"
done
if command -v man >/dev/null 2>&1; then
	MANWIDTH=80 man -l "$x/usr/share/man/man8/kvmnet-apply.8.gz" 2>&1 | grep -q 'SYNOPSIS' || fail "man cannot render kvmnet-apply.8"
fi
ok "binary runs, $(ls "$x"/usr/share/man/man8 | wc -l) man pages"
bash -n "$x/usr/share/bash-completion/completions/kvmnet" || fail "bash completion does not parse"
grep -q '__start_kvmnet' "$x/usr/share/bash-completion/completions/kvmnet" || fail "bash completion defines no __start_kvmnet"
grep -q '^#compdef kvmnet' "$x/usr/share/zsh/vendor-completions/_kvmnet" || fail "zsh completion has no #compdef"
grep -q 'complete -c kvmnet' "$x/usr/share/fish/vendor_completions.d/kvmnet.fish" || fail "fish completion completes nothing"
# zsh and fish parse their completions here when this machine has them;
# otherwise step 3 installs them in its throwaway root and parses there,
# so the check never silently skips (and needs root, as step 3 does).
shells_missing=
for sh in zsh fish; do
	command -v $sh >/dev/null 2>&1 || shells_missing="$shells_missing $sh"
done
if command -v zsh >/dev/null 2>&1; then
	zsh -n "$x/usr/share/zsh/vendor-completions/_kvmnet" || fail "zsh completion does not parse"
fi
if command -v fish >/dev/null 2>&1; then
	fish -n "$x/usr/share/fish/vendor_completions.d/kvmnet.fish" || fail "fish completion does not parse"
fi
if [ -z "$shells_missing" ]; then
	ok "completions: bash, zsh and fish parse them"
else
	ok "completions: the bash one parses;$shells_missing not installed here: step 3 parses theirs"
fi

if [ "$root" = no ]; then
	echo "test-deb: not root: skipping the example plan, the install, the daemon start${shells_missing:+ and parsing the completions of$shells_missing}"
	exit 0
fi

# A host namespace with an uplink eth0 and a default route, as the example
# file expects, and the LAN at the uplink's other end.
ip netns add "$host_ns"
ip netns add "$lan_ns"
ip -n "$host_ns" link set lo up
ip -n "$host_ns" link add eth0 type veth peer name lan0 netns "$lan_ns"
ip -n "$host_ns" addr add 172.30.0.2/24 dev eth0
ip -n "$host_ns" link set eth0 up
ip -n "$lan_ns" addr add 172.30.0.1/24 dev lan0
ip -n "$lan_ns" link set lan0 up
ip -n "$host_ns" route add default via 172.30.0.1
state=$work/state
"$kvmnet" --netns "$host_ns" --state-dir "$state" plan -f "$x/etc/kvmnet/host.yaml.example" >"$work/plan" ||
	fail "the example host file does not plan"
ok "the example host file plans ($(wc -l <"$work/plan") lines)"

# 3. Install, remove, purge on a throwaway overlay of this machine. The
# dependencies (nftables, iproute2) are this machine's own.
cp "$deb" "$work/kvmnet.deb"
cp "$x/usr/share/zsh/vendor-completions/_kvmnet" "$x/usr/share/fish/vendor_completions.d/kvmnet.fish" "$work/"
echo "$shells_missing" >"$work/shells-missing"
cat >"$work/in-chroot.sh" <<'EOF'
set -eu
fail() { echo "test-deb: FAIL (in the throwaway root): $*" >&2; exit 1; }
ok() { echo "test-deb: ok: $*"; }
wants=/etc/systemd/system/multi-user.target.wants/kvmnet.service

# The shells this machine lacks, installed here only: the overlay goes
# away with everything apt-get writes.
missing=$(cat /root/shells-missing)
if [ -n "$missing" ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/root/apt.log 2>&1 ||
		{ cat /root/apt.log; fail "installing$missing to parse the completions (apt-get install)"; }
	for sh in $missing; do
		case $sh in
		zsh) zsh -n /root/_kvmnet || fail "zsh completion does not parse" ;;
		fish) fish -n /root/kvmnet.fish || fail "fish completion does not parse" ;;
		esac
	done
	ok "completions:$missing installed in the throwaway root parse them"
fi

dpkg -i /root/kvmnet.deb >/root/dpkg.log 2>&1 || { cat /root/dpkg.log; fail "dpkg -i"; }
[ "$(dpkg-query -W -f '${Status}' kvmnet)" = "install ok installed" ] || fail "not installed"
/usr/sbin/kvmnet --help >/dev/null || fail "installed kvmnet does not run"
[ -L "$wants" ] || fail "postinst did not enable kvmnet.service"
man -w kvmnet-daemon >/dev/null || fail "man does not find kvmnet-daemon"
systemd-analyze verify /lib/systemd/system/kvmnet.service || fail "systemd-analyze verify"
ExecStart=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/kvmnet.service)
[ -x "${ExecStart%% *}" ] || fail "ExecStart ${ExecStart%% *} is not executable"
ok "dpkg -i: installed, enabled, unit verified (ExecStart=$ExecStart)"
if systemd-analyze security --help 2>/dev/null | grep -q -- --offline; then
	echo "test-deb: systemd-analyze security: $(systemd-analyze security --offline=yes /lib/systemd/system/kvmnet.service 2>&1 | tail -n 1)"
fi

mkdir -p /var/lib/kvmnet && echo state >/var/lib/kvmnet/kvmnet.db
dpkg -r kvmnet >>/root/dpkg.log 2>&1 || { cat /root/dpkg.log; fail "dpkg -r"; }
[ ! -e /usr/sbin/kvmnet ] || fail "dpkg -r left /usr/sbin/kvmnet"
[ ! -e /lib/systemd/system/kvmnet.service ] || fail "dpkg -r left the unit"
[ -f /etc/default/kvmnet ] || fail "dpkg -r removed the conffile /etc/default/kvmnet"
[ -f /var/lib/kvmnet/kvmnet.db ] || fail "dpkg -r removed the state"
ok "dpkg -r: program gone, conffiles and state kept"

dpkg -P kvmnet >>/root/dpkg.log 2>&1 || { cat /root/dpkg.log; fail "dpkg -P"; }
[ ! -e /etc/default/kvmnet ] && [ ! -e /etc/kvmnet ] || fail "dpkg -P left /etc/default/kvmnet or /etc/kvmnet"
[ ! -e /var/lib/kvmnet ] || fail "dpkg -P left /var/lib/kvmnet"
[ ! -e "$wants" ] && [ ! -e /etc/systemd/system/kvmnet.service ] || fail "dpkg -P left the unit enabled or masked"
[ -z "$(dpkg-query -W -f '${Status}' kvmnet 2>/dev/null | grep -v 'not-installed')" ] || fail "dpkg still knows kvmnet"
ok "dpkg -P: nothing left"
EOF
unshare --mount --propagation private sh -eu -c '
	work=$1
	o=$work/overlay
	mkdir -p "$o"
	# Upper and work directories on a tmpfs: nothing reaches the disk.
	mount -t tmpfs tmpfs "$o"
	mkdir "$o/upper" "$o/work" "$o/root"
	mount -t overlay overlay -o "lowerdir=/,upperdir=$o/upper,workdir=$o/work" "$o/root"
	mount --rbind /proc "$o/root/proc"
	mount --rbind /sys "$o/root/sys"
	mount --rbind /dev "$o/root/dev"
	mount -t tmpfs tmpfs "$o/root/run"
	mount -t tmpfs tmpfs "$o/root/tmp"
	cp "$work/kvmnet.deb" "$work/in-chroot.sh" "$work/shells-missing" "$work/_kvmnet" "$work/kvmnet.fish" "$o/root/root/"
	chroot "$o/root" sh /root/in-chroot.sh
' sh "$work"

# 4. The daemon as the unit runs it (ExecStart's command, here in the test's
# namespace), waiting for its start on its log (tail -f follows the file
# with inotify) rather than for a time.
exec_start=$(sed -n 's/^ExecStart=//p' "$x/lib/systemd/system/kvmnet.service")
set -- $exec_start
[ "$1" = /usr/sbin/kvmnet ] && [ "$2" = daemon ] || fail "unexpected ExecStart=$exec_start"
"$kvmnet" --netns "$host_ns" --state-dir "$state" daemon >"$work/daemon.log" 2>&1 &
daemon_pid=$!
# Its first log line, as text or JSON.
timeout 20 sh -c 'tail -n +1 -f "$1" | grep -q -m 1 -E "msg=starting|\"msg\":\"starting\""' sh "$work/daemon.log" ||
	{ cat "$work/daemon.log"; fail "the daemon did not start within 20s"; }
"$kvmnet" --netns "$host_ns" --state-dir "$state" get networks >/dev/null || fail "the daemon does not answer"
"$kvmnet" --netns "$host_ns" --state-dir "$state" apply -f "$x/etc/kvmnet/host.yaml.example" >/dev/null ||
	fail "apply through the daemon failed"
"$kvmnet" --netns "$host_ns" --state-dir "$state" get networks -o json >"$work/networks.json"
grep -q '"dev"' "$work/networks.json" && grep -q '"test"' "$work/networks.json" || fail "get networks lacks dev and test: $(cat "$work/networks.json")"
kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
[ "$rc" = 0 ] || { cat "$work/daemon.log"; fail "the daemon exited with status $rc on SIGTERM"; }
daemon_pid=
ok "the daemon starts as ExecStart runs it, answers on its socket, applies the example, stops on SIGTERM"
"$kvmnet" --netns "$host_ns" --state-dir "$state" destroy >/dev/null || fail "destroy"

echo "test-deb: PASS"
