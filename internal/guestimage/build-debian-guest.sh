#!/usr/bin/env bash
# build-debian-guest.sh [CACHEDIR]
#
# Builds a Debian 12 (bookworm) cloud image, shaped like the distribution's own
# "genericcloud" images and holding nothing of Ferry: systemd, cloud-init
# (NoCloud datasource), openssh-server, qemu-guest-agent, the cloud kernel,
# GRUB for BIOS on one ext4 partition, 2 GiB virtual, compressed qcow2.
# cloud-init grows the root partition and filesystem to the disk's size and
# makes the SSH host keys, the machine-id and the users on first boot.
#
# Prints the image's path, CACHEDIR/debian-12-<hash>.qcow2, where <hash> is the
# first 12 hex digits of this script's SHA-256: a changed script builds a new
# image, an unchanged one reuses the cached image. CACHEDIR defaults to
# $FERRY_GUEST_CACHE or /var/cache/ferry/guests (outside any checkout, so a
# fresh clone reuses it). Runs as root; installs the Debian packages it needs
# (mmdebstrap, grub-pc-bin, ...). Cold build: ~3 minutes, ~100 MB downloaded
# from deb.debian.org. Safe to run concurrently (flock); an interrupted build
# leaves no image behind (temp file + rename).
#
# No loop device and no mount: mmdebstrap builds the tree in a directory,
# mkfs.ext4 -d copies it into the partition of a sparse raw file, and GRUB's
# boot.img and core.img are written with dd.
set -euo pipefail

if [[ $# -gt 1 ]]; then
	echo "usage: $0 [CACHEDIR]" >&2
	exit 2
fi
script="${BASH_SOURCE[0]}"
hash=$(sha256sum "$script" | cut -c1-12)
cachedir=${1:-${FERRY_GUEST_CACHE:-/var/cache/ferry/guests}}
mkdir -p "$cachedir"
cachedir=$(cd "$cachedir" && pwd)
img="$cachedir/debian-12-$hash.qcow2"

if [[ -s $img ]]; then
	echo "$img"
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "build-debian-guest: no $img yet; building it needs root (mmdebstrap --mode=root, mkfs.ext4 -d keeps file owners)" >&2
	exit 1
fi

exec 9>"$cachedir/.lock"
flock 9
if [[ -s $img ]]; then # another build finished while we waited
	echo "$img"
	exit 0
fi
# Holding the lock, no other build runs: what a killed build left is garbage.
rm -rf "$cachedir"/.build.*

log() { echo "build-debian-guest: $*" >&2; }
began=$SECONDS

# --- host packages --------------------------------------------------------------
need=(mmdebstrap grub-pc-bin grub2-common qemu-utils e2fsprogs fdisk debian-archive-keyring)
missing=()
for p in "${need[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work=$(mktemp -d "$cachedir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"

# --- the tree ---------------------------------------------------------------------
packages=(systemd-sysv udev dbus systemd-resolved linux-image-cloud-amd64 cloud-init
	cloud-guest-utils openssh-server qemu-guest-agent sudo iproute2 netbase e2fsprogs fdisk
	stress-ng)
mirror=${FERRY_DEBIAN_MIRROR:-http://deb.debian.org}
log "mmdebstrap bookworm (${#packages[@]} packages and their dependencies)"
# The merged-usr hook lays out /bin -> usr/bin itself; without it apt pulls usrmerge
# (and perl). Documentation, man pages and locales are left out as in minimal images.
mmdebstrap --mode=root --variant=minbase --quiet \
	--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
	--aptopt='APT::Install-Recommends "false"' \
	--aptopt='APT::Install-Suggests "false"' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-include=/usr/share/locale/locale.alias' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--include="$(
		IFS=,
		echo "${packages[*]}"
	)" \
	bookworm "$root" \
	"deb $mirror/debian bookworm main" \
	"deb $mirror/debian bookworm-updates main" \
	"deb $mirror/debian-security bookworm-security main" >&2

kernel=$(cd "$root/boot" && ls -1 vmlinuz-*-cloud-amd64 | sort -V | tail -n1)
kver=${kernel#vmlinuz-}
[[ -s $root/boot/initrd.img-$kver ]] || {
	log "no initrd for $kver in the tree"
	exit 1
}

# Per-instance state is made on first boot, not baked in: every VM from this image
# gets its own host keys and machine-id.
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo debian >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
# mmdebstrap copied the build host's resolv.conf; the guest asks systemd-resolved.
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
# With neither ifupdown nor netplan, cloud-init renders systemd-networkd files:
# networkd must run to apply them.
chroot "$root" systemctl enable systemd-networkd systemd-resolved >&2
# Where the debconf question cloud-init/datasources writes its answer.
cat >"$root/etc/cloud/cloud.cfg.d/90_dpkg.cfg" <<'EOF'
# to update this file, run dpkg-reconfigure cloud-init
datasource_list: [ NoCloud, None ]
EOF
# cloud-init's default locale, en_US.UTF-8, is not generated in a minimal tree: its
# locale module would fail (and cloud-init report an error) on every first boot.
# C.UTF-8 ships with libc and needs no generation.
echo 'locale: C.UTF-8' >"$root/etc/cloud/cloud.cfg.d/05_locale.cfg"
echo 'LANG=C.UTF-8' >"$root/etc/default/locale"
rm -rf "$root"/var/lib/cloud/* "$root"/var/log/cloud-init*
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
rm -f "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/var/cache/debconf/*-old

uuid=$(cat /proc/sys/kernel/random/uuid)
cat >"$root/etc/fstab" <<EOF
# <file system>	<mount point>	<type>	<options>	<dump>	<pass>
UUID=$uuid	/	ext4	rw,discard,errors=remount-ro	0	1
EOF

# GRUB for BIOS, without grub-install (it wants a block device): its modules in
# /boot/grub/i386-pc as grub-install puts them, and a grub.cfg written here.
mkdir -p "$root/boot/grub/i386-pc"
cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst "$root/boot/grub/i386-pc/"
cat >"$root/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set default=0
set timeout=1
search --no-floppy --fs-uuid --set=root $uuid
menuentry 'Debian GNU/Linux 12 ($kver)' {
	insmod gzio
	insmod part_msdos
	insmod ext2
	linux /boot/vmlinuz-$kver root=UUID=$uuid ro console=tty0 console=ttyS0,115200n8
	initrd /boot/initrd.img-$kver
}
EOF

# --- the disk ---------------------------------------------------------------------
raw="$work/disk.raw"
size_mib=2048
start_mib=1
truncate -s "${size_mib}M" "$raw"
echo "start=2048, type=83, bootable" | sfdisk --quiet --label dos "$raw" >&2
log "mkfs.ext4 -d (root partition, $((size_mib - start_mib)) MiB)"
mkfs.ext4 -q -F -L root -U "$uuid" -E offset=$((start_mib * 1048576)) -d "$root" \
	"$raw" "$((size_mib - start_mib))M" >&2

# core.img carries what it needs to find and read /boot/grub; the rest loads from there.
grub-mkimage -O i386-pc -o "$work/core.img" -p '(hd0,msdos1)/boot/grub' \
	biosdisk part_msdos ext2 search_fs_uuid
core_sectors=$((($(stat -c %s "$work/core.img") + 511) / 512))
if ((core_sectors >= start_mib * 2048 - 1)); then
	log "core.img ($core_sectors sectors) does not fit before the partition"
	exit 1
fi
# boot.img's first 440 bytes only: the partition table that follows stays intact.
dd if=/usr/lib/grub/i386-pc/boot.img of="$raw" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$raw" bs=512 seek=1 conv=notrunc status=none

log "qemu-img convert -c (compressed qcow2)"
qemu-img convert -c -f raw -O qcow2 "$raw" "$work/disk.qcow2"
mv -f "$work/disk.qcow2" "$img"
log "built in $((SECONDS - began)) s: $(du -m "$img" | cut -f1) MiB"
echo "$img"
