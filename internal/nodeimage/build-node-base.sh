#!/usr/bin/env bash
# build-node-base.sh [CACHEDIR]
#
# Builds the base layer of Ferry's node image (what deploy/image/Dockerfile's
# runtime stage holds, without Docker): a Debian 12 (bookworm) root filesystem
# from `debootstrap --variant=minbase`, then qemu-system-x86, qemu-utils and
# ca-certificates installed in a chroot with --no-install-recommends; apt's
# lists and caches, documentation, man pages and locales removed, /dev left
# empty (the runtime makes it). The tree is tarred, uncompressed, as one OCI
# layer.
#
# Writes CACHEDIR/node-base-<hash>.tar and CACHEDIR/node-base-<hash>.json, the
# layer's OCI descriptor (mediaType, digest, size) and its diffID, and prints
# the .tar's path. <hash> is the first 12 hex digits of this script's SHA-256:
# a changed script builds a new layer, an unchanged one reuses the cached one.
# CACHEDIR defaults to $FERRY_IMAGE_CACHE or /var/cache/ferry/images (outside
# any checkout). The .json is written last: a layer without it is not done.
#
# Packages come from the Debian mirror this machine's apt uses (the bookworm
# and bookworm-security entries of /etc/apt/sources.list*; deb.debian.org when
# there is none); FERRY_DEBIAN_MIRROR and FERRY_DEBIAN_SECURITY_MIRROR (full
# URLs, e.g. http://deb.debian.org/debian) override them. Runs as root;
# installs debootstrap when missing. Cold build: ~2.5 minutes. Safe to run
# concurrently (flock); an interrupted build leaves nothing used behind (temp
# directory + rename). debootstrap and the chroot run in their own mount
# namespaces, so a killed build leaves no mount behind either.
set -euo pipefail

if [[ $# -gt 1 ]]; then
	echo "usage: $0 [CACHEDIR]" >&2
	exit 2
fi
script="${BASH_SOURCE[0]}"
hash=$(sha256sum "$script" | cut -c1-12)
cachedir=${1:-${FERRY_IMAGE_CACHE:-/var/cache/ferry/images}}
mkdir -p "$cachedir"
cachedir=$(cd "$cachedir" && pwd)
layer="$cachedir/node-base-$hash.tar"
desc="$cachedir/node-base-$hash.json"

done_already() { [[ -s $desc && -s $layer ]]; }

if done_already; then
	echo "$layer"
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "build-node-base: no $layer yet; building it needs root (debootstrap, chroot)" >&2
	exit 1
fi

exec 9>"$cachedir/.lock"
flock 9
if done_already; then # another build finished while we waited
	echo "$layer"
	exit 0
fi
# Holding the lock, no other build runs: what a killed build left is garbage.
# --one-file-system: never follow a mount a killed build might have left.
rm -rf --one-file-system "$cachedir"/.build.*

log() { echo "build-node-base: $*" >&2; }
began=$SECONDS

# --- host packages --------------------------------------------------------------
need=(debootstrap debian-archive-keyring tar util-linux)
missing=()
for p in "${need[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- the mirror -------------------------------------------------------------------
# The first URI whose entry has the suite $1, from one-line (.list) and deb822
# (.sources) files.
apt_uri() {
	local suite=$1 f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -r $f ]] || continue
		awk -v suite="$suite" '
			$1 == "deb" {
				sub(/^deb[ \t]+(\[[^]]*\][ \t]+)?/, "")
				split($0, w, /[ \t]+/)
				if (w[2] == suite) { print w[1]; exit }
			}' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -r $f ]] || continue
		awk -v suite="$suite" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") {
					split(uris, u, " "); print u[1]; exit
				}
				types = ""; suites = ""; uris = ""
			}
			/^[ \t]*$/ { flush(); next }
			/^#/ { next }
			tolower($1) == "types:" { $1 = ""; types = $0 }
			tolower($1) == "suites:" { $1 = ""; suites = $0 }
			tolower($1) == "uris:" { $1 = ""; uris = $0 }
			END { flush() }' "$f"
	done
}
mirror=${FERRY_DEBIAN_MIRROR:-$(apt_uri bookworm | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}
security=${FERRY_DEBIAN_SECURITY_MIRROR:-$(apt_uri bookworm-security | head -n1)}
security=${security:-http://deb.debian.org/debian-security}
mirror=${mirror%/}
security=${security%/}

work=$(mktemp -d "$cachedir/.build.XXXXXX")
trap 'rm -rf --one-file-system "$work"' EXIT
root="$work/root"

# --- the tree ---------------------------------------------------------------------
log "debootstrap --variant=minbase bookworm from $mirror"
unshare --mount --propagation private \
	debootstrap --variant=minbase --merged-usr bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
	tail -n 30 "$work/debootstrap.log" >&2
	[[ -f $root/debootstrap/debootstrap.log ]] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
	exit 1
}

cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
# As in Debian's slim images: no documentation, man pages or translations.
cat >"$root/etc/dpkg/dpkg.cfg.d/01-ferry-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
cat >"$root/etc/apt/apt.conf.d/01-ferry" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
# No service starts in the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"

log "apt-get install qemu-system-x86 qemu-utils ovmf ca-certificates (chroot)"
# shellcheck disable=SC2016
unshare --mount --propagation private sh -c '
	set -e
	mount -t proc proc "$1/proc"
	exec chroot "$1" sh -c "
		set -e
		export DEBIAN_FRONTEND=noninteractive LC_ALL=C
		apt-get update -qq
		apt-get upgrade -y -qq
		apt-get install -y -qq --no-install-recommends qemu-system-x86 qemu-utils ovmf ca-certificates
		apt-get clean
	"' _ "$root" >"$work/apt.log" 2>&1 || {
	tail -n 30 "$work/apt.log" >&2
	exit 1
}
# The tool must run in the image, not just be there.
chroot "$root" qemu-system-x86_64 --version >/dev/null
# VMs with bootloader EFI or EFIWithSecureBoot boot OVMF from Debian's ovmf package.
test -s "$root/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
chroot "$root" qemu-img --version >/dev/null

rm -f "$root/usr/sbin/policy-rc.d"
# What debootstrap installed before the dpkg excludes existed.
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
	"$root"/var/cache/apt/archives/partial/* "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
rm -rf "$root"/var/log/* "$root"/debootstrap "$root"/tmp/* "$root"/var/tmp/*
# The runtime provides these per container; nothing of the build host stays.
: >"$root/etc/resolv.conf"
echo localhost >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
EOF

# --- the layer ----------------------------------------------------------------------
# Top-level entries named without "./", as image builders write them; /dev, /proc
# and /sys as empty directories. --numeric-owner: the ids are what the layer means.
for d in dev proc sys; do
	if mountpoint -q "$root/$d"; then
		log "$root/$d is still mounted"
		exit 1
	fi
done
log "tar (one uncompressed layer)"
(
	cd "$root"
	# shellcheck disable=SC2046
	tar --create --file "$work/layer.tar" --numeric-owner --sort=name \
		--xattrs --xattrs-include=security.capability \
		--anchored --exclude='dev/*' --exclude='proc/*' --exclude='sys/*' \
		$(ls -A)
)
size=$(stat -c %s "$work/layer.tar")
sum=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
printf '{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d,"diffID":"sha256:%s"}\n' \
	"$sum" "$size" "$sum" >"$work/layer.json"
mv -f "$work/layer.tar" "$layer"
mv -f "$work/layer.json" "$desc"
log "built in $((SECONDS - began)) s: $((size / 1048576)) MiB"
echo "$layer"
