#!/usr/bin/env bash
# build.sh builds kube-apiserver and kubectl v1.32.13 from the Go module proxy
# into hack/.bin/k8s-v1.32.13/, once. Later runs reuse the cached binaries.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ver=v1.32.13
out="$here/../.bin/k8s-$ver"
if [[ -x "$out/kube-apiserver" && -x "$out/kubectl" ]]; then
	echo "$out"
	exit 0
fi
mkdir -p "$out"
# One build at a time: labs started in parallel (several test binaries)
# wait here, then find the binaries made by the first.
exec 9>"$out/.build.lock"
flock 9
if [[ -x "$out/kube-apiserver" && -x "$out/kubectl" ]]; then
	echo "$out"
	exit 0
fi
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ld+=" -X $p.gitVersion=$ver -X $p.gitMajor=1 -X $p.gitMinor=32"
done
cd "$here"
# Build into a temp name, then rename, so a killed build never leaves a
# half-written binary that a later run would trust.
for cmd in kube-apiserver kubectl; do
	go build -trimpath -ldflags "$ld" -o "$out/.$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2
	mv "$out/.$cmd.tmp" "$out/$cmd"
done
echo "$out"
