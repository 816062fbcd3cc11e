#!/usr/bin/env bash
# build-guest-image.sh OUTDIR
#
# Builds OUTDIR/ferry-guest.img: a raw, 32 MiB, unpartitioned FAT image that
# SeaBIOS boots through syslinux with a serial console. It holds the Debian
# cloud kernel from /boot and a busybox (busybox-static) initramfs whose init
# script:
#   - prints "FERRY-GUEST BOOTED", then "CNT <n>" every second on ttyS0;
#   - dirties <MiB> of tmpfs in a loop when the kernel command line has
#     ferry.dirty=<MiB> or "dirty <MiB>" is typed on the console
#     ("DIRTY <MiB> STARTED"); "stop" stops it ("DIRTY STOPPED"); a size that
#     would leave the guest less than 24 MiB is refused ("ERR dirty <MiB> MiB
#     does not fit: at most <n>"): the buffer is tmpfs, which no kill frees;
#   - keeps its own loops (heartbeat, console, power button, DHCP) out of the
#     OOM killer's reach: dd and "run" commands are what it kills instead;
#   - "poweroff" typed on the console (or an ACPI power button press, e.g.
#     QMP system_powerdown) powers the guest off; "reboot" reboots it;
#   - brings up eth0 when present and runs udhcpc in the background,
#     printing "IP <addr>" once it has a lease (address, hostname, and the
#     classless static routes when given, else the router);
#   - "net" typed on the console prints "NET <links> | <eth0 address> |
#     <default route>";
#   - "run <command>" runs it, its output prefixed "OUT ", then "RUN done";
#   - "ping <addr>" typed on the console pings it three times and prints
#     "PING <addr> <received>/3";
#   - loads virtio_blk, so that a disk hot-plugged into the running guest
#     (ACPI PCI hot-plug, built into the kernel) shows as /dev/vdX; "disks"
#     typed on the console prints "DISKS <dev>:<serial>:<512-byte sectors> ..."
#     for every virtio disk.
#
# Needs (Debian 12): linux-image-cloud-amd64 busybox-static dosfstools mtools
# syslinux syslinux-common cpio. No loop devices, no mount, no network.
# Idempotent: does nothing when the image exists and is newer than this
# script and the kernel. Safe to run concurrently (flock on OUTDIR/.lock).
set -euo pipefail

if [[ $# -ne 1 ]]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi

outdir=$1
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
img="$outdir/ferry-guest.img"
script="${BASH_SOURCE[0]}"

kernel=${FERRY_GUEST_KERNEL:-}
if [[ -z $kernel ]]; then
	kernel=$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n1 || true)
fi
if [[ -z $kernel || ! -r $kernel ]]; then
	echo "build-guest-image: no /boot/vmlinuz-*-cloud-amd64 (apt-get install linux-image-cloud-amd64)" >&2
	exit 1
fi
kver=${kernel#/boot/vmlinuz-}
moddir="/lib/modules/$kver/kernel"

for tool in busybox mkfs.vfat syslinux mcopy cpio gzip flock; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "build-guest-image: missing $tool (apt-get install busybox-static dosfstools mtools syslinux syslinux-common cpio)" >&2
		exit 1
	fi
done
busybox=/bin/busybox
[[ -x $busybox ]] || busybox=$(command -v busybox)
if LC_ALL=C ldd "$busybox" >/dev/null 2>&1; then
	echo "build-guest-image: $busybox is not static (apt-get install busybox-static)" >&2
	exit 1
fi
ldlinux=/usr/lib/syslinux/modules/bios/ldlinux.c32

up_to_date() {
	[[ -s $img && $img -nt $script && $img -nt $kernel ]]
}

exec 9>"$outdir/.lock"
flock 9
if up_to_date; then
	echo "$img"
	exit 0
fi

work=$(mktemp -d "$outdir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,run,tmp,dirty,etc/acpi/PWRF,usr/share/udhcpc,lib/modules}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3

# Modules the cloud kernel builds as modules: ACPI power button + evdev (so
# acpid sees system_powerdown), virtio-pci/virtio-net (for udhcpc later) and
# virtio-blk (hot-plugged disks).
mods="virtio/virtio.ko virtio/virtio_ring.ko virtio/virtio_pci_legacy_dev.ko
virtio/virtio_pci_modern_dev.ko virtio/virtio_pci.ko net/core/failover.ko
net/net_failover.ko net/virtio_net.ko block/virtio_blk.ko acpi/button.ko input/evdev.ko"
for m in $mods; do
	for base in "$moddir/drivers" "$moddir"; do
		if [[ -f "$base/$m" ]]; then
			cp "$base/$m" "$root/lib/modules/"
			break
		fi
	done
done

cat >"$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "ACPI POWERDOWN" >/dev/ttyS0
poweroff -f
EOF

cat >"$root/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
case "$1" in
deconfig) ifconfig "$interface" 0.0.0.0 ;;
bound|renew)
	ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}"
	[ -n "$hostname" ] && hostname "$hostname"
	if [ -n "$staticroutes" ]; then
		# RFC 3442: classless routes replace the router option.
		set -- $staticroutes
		while [ $# -ge 2 ]; do
			ip route replace "$1" via "$2" dev "$interface"
			shift 2
		done
	else
		for r in $router; do route add default gw "$r" dev "$interface"; break; done
	fi
	: >/etc/resolv.conf
	for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
	echo "IP $ip" >/dev/ttyS0
	;;
esac
exit 0
EOF

cat >"$root/init" <<'EOF'
#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=90% tmpfs /dirty
exec </dev/ttyS0 >/dev/ttyS0 2>&1
# Every process forked from here inherits this: the OOM killer never picks the heartbeat or
# the console loop (it once ended the heartbeat of a guest that dirtied 64 of its 92 MiB, and
# the guest looked dead). dd and "run" commands raise theirs again.
echo -1000 >/proc/self/oom_score_adj

# The power button must work from the first heartbeat on: a stop requested as soon as the
# platform sees the guest up (ACPI system_powerdown) is otherwise missed.
for m in button evdev; do
	[ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
done
mkdir -p /var/log
acpid -c /etc/acpi -l /dev/null 2>/dev/null

echo "FERRY-GUEST BOOTED"

# Heartbeat: one line a second, counter lives in guest memory so it survives
# live migration.
(
	n=1
	while :; do
		echo "CNT $n"
		n=$((n + 1))
		sleep 1
	done
) &

kids() { # pids whose parent is $1
	for s in /proc/[0-9]*/stat; do
		read -r pid _ _ ppid _ <"$s" 2>/dev/null || continue
		[ "$ppid" = "$1" ] && echo "$pid"
	done
}

DPID=
dirty_stop() {
	[ -n "$DPID" ] || return 0
	rm -f /run/dirty.on
	c=$(kids "$DPID")
	kill "$DPID" $c 2>/dev/null
	wait "$DPID" 2>/dev/null
	DPID=
	rm -f /dirty/buf
	echo "DIRTY STOPPED"
}

# DIRTY_RESERVE_MIB is what the guest keeps beside a dirty buffer: with less, the kernel runs
# out of memory (64 MiB dirtied in a 128 MiB guest left it 2 MiB) and kills processes.
DIRTY_RESERVE_MIB=24

dirty_start() {
	case "$1" in '' | *[!0-9]*) echo "ERR dirty wants MiB"; return ;; esac
	dirty_stop >/dev/null
	avail=$(sed -n 's/^MemAvailable: *\([0-9]*\) kB$/\1/p' /proc/meminfo)
	fit=$((${avail:-0} / 1024 - DIRTY_RESERVE_MIB))
	if [ "$1" -gt "$fit" ]; then
		echo "ERR dirty $1 MiB does not fit: at most $((fit > 0 ? fit : 0))"
		return
	fi
	: >/run/dirty.on
	(
		echo 1000 >/proc/self/oom_score_adj
		while [ -e /run/dirty.on ]; do
			dd if=/dev/urandom of=/dirty/buf bs=1M count="$1" conv=notrunc 2>/dev/null
		done
	) &
	DPID=$!
	echo "DIRTY $1 STARTED"
}

(
	# In dependency order: virtio needs virtio_ring.
	for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev \
		virtio_pci failover net_failover virtio_net virtio_blk; do
		[ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
	done
	i=0
	while [ $i -lt 100 ] && [ ! -e /sys/class/net/eth0 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if [ -e /sys/class/net/eth0 ]; then
		ip link set lo up
		ip link set eth0 up
		udhcpc -i eth0 -b -q -s /usr/share/udhcpc/default.script >/dev/null 2>&1
	fi
) &

for arg in $(cat /proc/cmdline); do
	case "$arg" in ferry.dirty=*) dirty_start "${arg#ferry.dirty=}" ;; esac
done

while :; do
	if ! read -r cmd arg; then
		sleep 1
		continue
	fi
	case "$cmd" in
	dirty) dirty_start "$arg" ;;
	run)
		# run CMD: any shell command; its output lines prefixed "OUT ", then "RUN <status>".
		(
			echo 0 >/proc/self/oom_score_adj
			exec sh -c "$arg"
		) 2>&1 | sed 's/^/OUT /'
		echo "RUN done"
		;;
	net)
		# net: the guest's own view of its network, one line.
		echo "NET $(ls /sys/class/net | tr '\n' ' ')| $(ip -o -4 addr show dev eth0 2>&1 | awk '{print $4}') | $(ip route show default 2>&1 | head -n1)"
		;;
	ping)
		# ping ADDR: three echo requests from the guest; "PING ADDR <received>/3".
		got=$(ping -c 3 -W 1 "$arg" 2>/dev/null | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
		echo "PING $arg ${got:-0}/3"
		;;
	disks)
		# disks: the guest's virtio disks, one line: "DISKS vda::65536 vdb:hotplug-1f:32768".
		out=
		for d in /sys/block/vd*; do
			[ -e "$d" ] || continue
			out="$out ${d##*/}:$(cat "$d/serial" 2>/dev/null):$(cat "$d/size")"
		done
		echo "DISKS$out"
		;;
	stop) dirty_stop ;;
	poweroff)
		echo "POWEROFF"
		poweroff -f
		;;
	reboot)
		echo "REBOOT"
		reboot -f
		;;
	"") ;;
	*) echo "ERR unknown command: $cmd" ;;
	esac
done
EOF
chmod 755 "$root/init" "$root/etc/acpi/PWRF/00000080" "$root/usr/share/udhcpc/default.script"

(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -6 >"$work/initrd.gz"

cat >"$work/syslinux.cfg" <<'EOF'
SERIAL 0 115200
DEFAULT ferry
PROMPT 0
TIMEOUT 1
LABEL ferry
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0 quiet panic=-1
EOF

raw="$work/ferry-guest.img"
truncate -s 32M "$raw"
mkfs.vfat -n FERRYGUEST "$raw" >/dev/null
syslinux --install "$raw"
export MTOOLS_SKIP_CHECK=1
mcopy -i "$raw" "$kernel" ::vmlinuz
mcopy -i "$raw" "$work/initrd.gz" ::initrd.gz
mcopy -i "$raw" "$work/syslinux.cfg" ::syslinux.cfg
if ! mdir -a -i "$raw" ::ldlinux.c32 >/dev/null 2>&1; then
	mcopy -i "$raw" "$ldlinux" ::ldlinux.c32
fi
mv -f "$raw" "$img"
echo "$img"
