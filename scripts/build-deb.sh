#!/bin/sh
# build-deb.sh [OUTDIR]: builds the kvmnet Debian package with dpkg-deb
# (no debhelper) into OUTDIR (default bin/deb) and prints its path.
# `make deb` runs it. Needs go, dpkg-deb and gzip; runs as any user.
#
# The package holds:
#   /usr/sbin/kvmnet                         static binary (CGO_ENABLED=0)
#   /lib/systemd/system/kvmnet.service       contrib/systemd/kvmnet.service
#   /etc/default/kvmnet                      KVMNET_OPTS for the unit (conffile)
#   /etc/kvmnet/host.yaml.example            examples/lab.yaml (conffile)
#   /usr/share/man/man8/kvmnet*.8.gz         from `kvmnet docs man`
#   bash, zsh and fish completions           from `kvmnet completion`
#   /usr/share/doc/kvmnet/                   README, metrics, Grafana dashboard
#
# Environment:
#   VERSION            package version; default from git: 1.2.3 at tag v1.2.3,
#                      1.2.3+git4.abc1234 four commits later, and
#                      0.0~git20260101.abc1234 before any tag
#   DEB_ARCH           Debian architecture (default: this machine's)
#   DEB_MAINTAINER     Maintainer field
#   SOURCE_DATE_EPOCH  timestamp of every file and page (default: the last
#                      commit's), so the same commit builds the same package
set -eu

cd "$(dirname "$0")/.."
out=${1:-bin/deb}
GO=${GO:-go}
arch=${DEB_ARCH:-$(dpkg --print-architecture)}
maintainer=${DEB_MAINTAINER:-kvmnet maintainers <maintainers@kvmnet.invalid>}
commit=$(git rev-parse --short=7 HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

if [ -z "${VERSION:-}" ]; then
	if tag=$(git describe --tags --match 'v[0-9]*' --abbrev=0 2>/dev/null); then
		n=$(git rev-list --count "$tag..HEAD")
		VERSION=${tag#v}
		[ "$n" = 0 ] || VERSION=$VERSION+git$n.$commit
	else
		VERSION=0.0~git$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d).$commit
	fi
fi

case $arch in
amd64 | arm64 | riscv64 | s390x) goarch=$arch ;;
i386) goarch=386 ;;
armhf) goarch=arm; export GOARM=7 ;;
armel) goarch=arm; export GOARM=5 ;;
ppc64el) goarch=ppc64le ;;
*) echo "build-deb.sh: no Go architecture for Debian architecture $arch" >&2; exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
umask 022

# The binary. Static, so the package needs no libc version; stripped, and
# without the build machine's paths, so the same commit builds the same
# binary (Go's build ID is derived from the inputs).
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch $GO build -trimpath -ldflags='-s -w' \
	-o "$root/usr/sbin/kvmnet" ./cmd/kvmnet

# Man pages and completions come from the commands themselves; when
# cross-building, from a native build of the same source.
gen=$root/usr/sbin/kvmnet
if [ "$goarch" != "$($GO env GOARCH)" ]; then
	gen=$work/kvmnet-native
	CGO_ENABLED=0 $GO build -o "$gen" ./cmd/kvmnet
fi
"$gen" docs man --source "kvmnet $VERSION" "$work/man"
mkdir -p "$root/usr/share/man/man8"
for page in "$work"/man/*.8; do
	gzip -9n <"$page" >"$root/usr/share/man/man8/$(basename "$page").gz"
done
mkdir -p "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
	"$root/usr/share/fish/vendor_completions.d"
"$gen" completion bash >"$root/usr/share/bash-completion/completions/kvmnet"
"$gen" completion zsh >"$root/usr/share/zsh/vendor-completions/_kvmnet"
"$gen" completion fish >"$root/usr/share/fish/vendor_completions.d/kvmnet.fish"

install -D -m 0644 contrib/systemd/kvmnet.service "$root/lib/systemd/system/kvmnet.service"
install -D -m 0644 packaging/deb/default "$root/etc/default/kvmnet"
mkdir -p "$root/etc/kvmnet"
{
	cat <<'EOF'
# An example host file for kvmnet: copy it to /etc/kvmnet/host.yaml, make
# egress name this host's uplink and the subnets free ones, then
#   kvmnet plan -f /etc/kvmnet/host.yaml     # shows what would change
#   kvmnet apply -f /etc/kvmnet/host.yaml    # makes it so; the daemon keeps it so
# The format is described in /usr/share/doc/kvmnet/README.md.gz. This is the
# source's examples/lab.yaml, the file of the lab (`kvmnet lab up`).
#
EOF
	cat examples/lab.yaml
} >"$root/etc/kvmnet/host.yaml.example"

doc=$root/usr/share/doc/kvmnet
install -D -m 0644 packaging/deb/copyright "$doc/copyright"
install -D -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/kvmnet"
gzip -9n <README.md >"$doc/README.md.gz"
[ ! -f docs/metrics.md ] || gzip -9n <docs/metrics.md >"$doc/metrics.md.gz"
install -D -m 0644 contrib/grafana/kvmnet-dashboard.json "$doc/examples/grafana/kvmnet-dashboard.json"
# A native package (no Debian revision): its changelog is changelog.gz.
cat <<EOF | gzip -9n >"$doc/changelog.gz"
kvmnet ($VERSION) unstable; urgency=medium

  * Built from commit $commit.

 -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF

# Control area.
mkdir -p "$root/DEBIAN"
for s in postinst prerm postrm; do
	install -m 0755 "packaging/deb/$s" "$root/DEBIAN/$s"
done
printf '%s\n' /etc/default/kvmnet /etc/kvmnet/host.yaml.example >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
	LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" \
	-e "s/@MAINTAINER@/$maintainer/" packaging/deb/control.in >"$root/DEBIAN/control"

find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$out"
deb=$out/kvmnet_${VERSION}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
