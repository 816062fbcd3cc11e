#!/usr/bin/env bash
# Builds bin/kubelet and bin/kube-proxy (what `ferry up --kubelet=real` runs on each node)
# from the same Kubernetes modules as Ferry, and bin/ferry-pause (the pods' sandbox
# process). Debian packages no kubelet; it is built here like Ferry's own components, in a
# scratch module that takes Ferry's go.mod (its versions and replace block) and adds only
# what the kubelet needs beyond it. Skipped when the binaries are there at that version.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
k8s=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' go.mod)
ldflags=$(make -s --no-print-directory print-ldflags)
mkdir -p bin
if [ -x bin/kubelet ] && [ -x bin/kube-proxy ] && bin/kubelet --version 2>/dev/null | grep -qx "Kubernetes $k8s" \
	&& bin/kube-proxy --version 2>/dev/null | grep -qx "Kubernetes $k8s"; then
	echo "bin/kubelet and bin/kube-proxy are $k8s"
else
	scratch=$(mktemp -d)
	trap 'rm -rf "$scratch"' EXIT
	sed 's#^module .*#module ferry.local/nodebins#' go.mod > "$scratch/go.mod"
	cp go.sum "$scratch/"
	echo "Building kubelet and kube-proxy $k8s…"
	(cd "$scratch" && go build -mod=mod -ldflags "$ldflags" -o "$OLDPWD/bin/" \
		k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
fi
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o bin/ferry-pause ./cmd/ferry-pause
