#!/usr/bin/env bash
# Installs what Ferry needs on a fresh Debian 12 machine (idempotent), then builds bin/ferry
# (with bin/ferry-launcher and bin/ferry-watchdog beside it).
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(qemu-system-x86 qemu-utils linux-image-cloud-amd64 busybox-static dosfstools mtools
	syslinux syslinux-common fdisk cpio iproute2 util-linux openssh-client iputils-ping genisoimage)
# UEFI firmware for VMs with bootloader EFI or EFIWithSecureBoot (the launcher runs OVMF
# from /usr/share/OVMF), and syslinux's EFI loader, with which the launcher's tests make
# the test guest bootable by it.
pkgs+=(ovmf syslinux-efi)
# The node image (make node-image) and its test: debootstrap builds the base, a containerd
# of the test's own imports and runs it.
pkgs+=(debootstrap containerd runc)
# Real-kubelet nodes (ferry up --kubelet=real, test/realkubelet): containerd and runc above,
# the CNI plugins of the pods' bridge (its masquerade uses iptables), kube-proxy's nftables.
pkgs+=(containernetworking-plugins iptables nftables conntrack)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "setup: installing ${missing[*]}"
	if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null; then
	export PATH=$PATH:/usr/local/go/bin
fi
command -v go >/dev/null || { echo "setup: Go 1.26 is needed (https://go.dev/dl)" >&2; exit 1; }

# helm, for the chart deploy/helm/ferry (test/deploy renders and lints it): built from its
# module, outside Ferry's, with the version stamped as in helm's releases.
helm_version=v4.3.2
if [[ $(helm version --template '{{.Version}}' 2>/dev/null) != "$helm_version" ]]; then
	if [[ $(id -u) -eq 0 ]]; then helm_bin=/usr/local/bin; else helm_bin=$(go env GOPATH)/bin; fi
	echo "setup: building helm $helm_version into $helm_bin (~3 min the first time)"
	(cd /tmp && GOFLAGS=-mod=mod GOBIN=$helm_bin go install \
		-ldflags "-X helm.sh/helm/v4/internal/version.version=$helm_version" \
		"helm.sh/helm/v4/cmd/helm@$helm_version")
	[[ $(id -u) -eq 0 ]] || echo "setup: add $helm_bin to your PATH to run helm"
fi

echo "setup: building bin/ferry, bin/ferry-launcher and bin/ferry-watchdog (the first build compiles Kubernetes: ~15-20 min on 2 cores)"
make --no-print-directory build
# kubelet and kube-proxy for real-kubelet nodes, and the pods' pause process (skipped when
# they are there at the right version; ~2 min after the first build of bin/ferry).
make --no-print-directory node-bins

# `ferry` on the PATH, as the README uses it.
if [[ $(id -u) -eq 0 ]]; then
	ln -sf "$PWD/bin/ferry" /usr/local/bin/ferry
else
	echo "setup: add $PWD/bin to your PATH to run ferry"
fi
