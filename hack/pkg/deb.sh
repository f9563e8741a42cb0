#!/bin/sh
# deb.sh OUTDIR builds lbd's Debian package into OUTDIR (made if absent) and
# prints its path. `make deb` runs it with VERSION (the version lbd reports,
# `git describe` by default) and GO set; DEB_VERSION overrides the Debian
# version derived from VERSION, GOARCH the architecture.
#
# The binary is static (CGO_ENABLED=0; the SQLite driver is pure Go). nFPM
# runs as a Go tool of this directory's module (go.mod's tool directive),
# so the build needs the Go module proxy or the module cache, nothing else.
set -eu

[ $# -eq 1 ] || { echo "usage: deb.sh OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
GO=${GO:-go}
VERSION=${VERSION:-$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)}
GOARCH=${GOARCH:-$("$GO" env GOARCH)}

# A Debian version must start with a digit and sort in release order:
# v1.2.0 -> 1.2.0, v1.2.0-3-gabc1234-dirty -> 1.2.0+3.gabc1234.dirty, and an
# untagged abc1234 -> 0.0.0~git20261207.abc1234 (the commit's date), which
# sorts before any release.
if [ -z "${DEB_VERSION:-}" ]; then
	v=${VERSION#v}
	case "$v" in
	[0-9]*.[0-9]*)
		DEB_VERSION=$(printf '%s' "$v" | sed 's/-/+/; s/-/./g')
		;;
	*)
		date=$(git -C "$root" log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date -u +%Y%m%d)
		DEB_VERSION=0.0.0~git$date.$(printf '%s' "$v" | sed 's/[^A-Za-z0-9.+~]/./g')
		;;
	esac
fi

stage=$out/.deb-stage
rm -rf "$stage"
mkdir -p "$stage"
trap 'rm -rf "$stage"' EXIT

(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=$GOARCH "$GO" build -trimpath \
	-ldflags "-s -w -X main.version=$VERSION" -o "$stage/lbd" ./cmd/lbd)
# lbd-remote is for the master (the forced command of lbd's SSH key); the
# package carries it so the operator can copy it there.
(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=$GOARCH "$GO" build -trimpath \
	-ldflags "-s -w" -o "$stage/lbd-remote" ./cmd/lbd-remote)
# The package's paths, as `make install` rewrites them for its PREFIX.
sed -e 's|/usr/local/sbin/lbd|/usr/sbin/lbd|g' -e 's|/usr/local/share/doc/lbd|/usr/share/doc/lbd|g' \
	"$root/hack/systemd/lbd.service" >"$stage/lbd.service"
sed 's|/usr/local/sbin/lbd|/usr/sbin/lbd|g' "$root/hack/cron/lbd" >"$stage/cron.d-lbd"
# debian/copyright in the machine-readable format, the licence text whole.
{
	printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n'
	printf 'Upstream-Name: lbd\nSource: https://github.com/lbd/lbd\n\n'
	printf 'Files: *\nCopyright: The lbd authors\nLicense: Apache-2.0\n'
	sed -e 's/[[:space:]]*$//' -e 's/^$/./' -e 's/^/ /' "$root/LICENSE"
} >"$stage/copyright"

deb=$out/lbd_${DEB_VERSION}_$GOARCH.deb
(cd "$here" && LBD_STAGE=$stage GOARCH=$GOARCH DEB_VERSION=$DEB_VERSION \
	"$GO" tool nfpm package --config nfpm.yaml --packager deb --target "$deb" >&2)
echo "$deb"
