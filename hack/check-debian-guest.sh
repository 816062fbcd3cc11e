#!/usr/bin/env bash
# check-debian-guest.sh [IMAGE]
#
# Boots the Debian guest image (default: the one `make debian-guest` builds) in bare
# QEMU the way a cloud would, and checks it: TCG, 1 vCPU, 1 GiB, the disk grown to 10G
# through a qcow2 overlay, a NoCloud seed (vfat labelled CIDATA) that adds a user with a
# fresh SSH key, user-mode networking with SSH forwarded from 127.0.0.1, the guest
# agent's virtio-serial channel and a pvpanic device. Checks that SSH runs a command,
# the root filesystem grew (~10G), the guest agent answers guest-sync-delimited and
# guest-get-osinfo (Debian), and system_powerdown stops the guest; prints the times.
# As root; installs qemu-system-x86 qemu-utils dosfstools mtools socat openssh-client
# when missing. Everything else stays in a temp directory, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

img=${1:-$(bash internal/guestimage/build-debian-guest.sh)}
[[ -s $img ]] || { echo "check-debian-guest: no image at $img" >&2; exit 1; }

need=(qemu-system-x86 qemu-utils dosfstools mtools socat openssh-client)
missing=()
for p in "${need[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/check-debian-guest.XXXXXX)
qemu_pid=
cleanup() {
	if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then kill "$qemu_pid"; fi
	rm -rf "$work"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	echo "--- last serial lines:" >&2
	tail -n 30 "$work/serial.log" >&2 || true
	exit 1
}

ssh-keygen -q -t ed25519 -N '' -C check-debian-guest -f "$work/id"
mac=52:54:00:12:34:56
cat >"$work/user-data" <<EOF
#cloud-config
users:
  - name: tester
    sudo: ALL=(ALL) NOPASSWD:ALL
    shell: /bin/bash
    ssh_authorized_keys:
      - $(cat "$work/id.pub")
runcmd:
  - echo provisioned >> /var/tmp/provisioned
EOF
cat >"$work/meta-data" <<EOF
instance-id: check-$(date +%s)
local-hostname: debian-check
EOF
cat >"$work/network-config" <<EOF
version: 2
ethernets:
  nic0:
    match:
      macaddress: "$mac"
    dhcp4: true
EOF
truncate -s 2M "$work/seed.img"
mkfs.vfat -n CIDATA "$work/seed.img" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -i "$work/seed.img" "$work/user-data" "$work/meta-data" "$work/network-config" ::

qemu-img create -q -f qcow2 -F qcow2 -b "$img" "$work/disk.qcow2" 10G

# A port for SSH on loopback; QEMU fails to start if it is taken.
port=$(shuf -i 20000-39999 -n 1)

start=$(date +%s.%N)
qemu-system-x86_64 -machine pc,accel=tcg -smp 1 -m 1024 -display none \
	-serial "file:$work/serial.log" \
	-drive "file=$work/disk.qcow2,format=qcow2,if=virtio" \
	-drive "file=$work/seed.img,format=raw,if=virtio,readonly=on" \
	-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" \
	-device "virtio-net-pci,netdev=n0,mac=$mac" \
	-chardev "socket,id=qga0,path=$work/qga.sock,server=on,wait=off" \
	-device virtio-serial -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0 \
	-device pvpanic \
	-qmp "unix:$work/qmp.sock,server=on,wait=off" &
qemu_pid=$!

since() { awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
sshg() {
	ssh -i "$work/id" -p "$port" -o BatchMode=yes -o StrictHostKeyChecking=no \
		-o UserKnownHostsFile=/dev/null -o ConnectTimeout="${ssh_timeout:-30}" -o LogLevel=ERROR tester@127.0.0.1 "$@"
}

# The guest agent's channel stays connected from boot to the end, as libvirt keeps it:
# with no client on the host side, Debian's qemu-ga spins on the closed port and takes
# most of the guest's one vCPU (measured: ~60 %), which slows the whole boot.
for _ in $(seq 1 100); do
	[[ -S $work/qga.sock ]] && break
	sleep 0.1
done
coproc QGA { exec socat - "UNIX-CONNECT:$work/qga.sock" 2>/dev/null; }
qga_id=0
# qga_sync: one guest-sync-delimited with a new id; true when the agent answers with that
# id. The socket accepts before the agent runs, and requests sent meanwhile are answered
# late: only the answer to the latest id counts.
qga_sync() {
	qga_id=$((qga_id + 1))
	printf '{"execute":"guest-sync-delimited","arguments":{"id":%d}}\n' "$qga_id" >&"${QGA[1]}"
	local line
	while IFS= read -r -t "${1:-3}" line <&"${QGA[0]}"; do
		line=$(tr -d '\377' <<<"$line")
		[[ $line =~ \"return\":\ *$qga_id[^0-9] ]] && return 0
	done
	return 1
}
# qga CMD: the agent's one-line answer to CMD (after a sync) in $qga_out. Not in $(...):
# the coprocess's pipes are not there in a subshell.
qga() {
	qga_sync 10 || return 1
	printf '{"execute":"%s"}\n' "$1" >&"${QGA[1]}"
	IFS= read -r -t 10 qga_out <&"${QGA[0]}"
}

agent=
ssh_ok=
deadline=$((SECONDS + 600))
while [[ -z $agent || -z $ssh_ok ]]; do
	((SECONDS < deadline)) || fail "guest not up within 600 s (agent: ${agent:-no}, ssh: ${ssh_ok:-no})"
	kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU exited"
	if [[ -z $agent ]] && qga_sync 2; then
		agent=$(since)
		echo "guest agent answers after ${agent} s"
	fi
	# User-mode networking accepts before sshd runs: only a login counts.
	if [[ -z $ssh_ok ]] && ssh_timeout=5 sshg true 2>/dev/null; then
		ssh_ok=$(since)
		echo "SSH login after ${ssh_ok} s"
	fi
	sleep 1
done

echo "uname: $(sshg uname -sr)"
ci=$(sshg 'cloud-init status --wait --long' || true)
echo "cloud-init done after $(since) s: $(grep '^status:' <<<"$ci")"
if ! grep -q '^status: done' <<<"$ci"; then
	sshg 'sudo grep -E "WARNING|ERROR|Traceback" /var/log/cloud-init.log | tail -n 20' >&2 || true
	fail "cloud-init: $ci"
fi
size_g=$(sshg "df -BG --output=size / | tail -n1 | tr -dc 0-9")
echo "df /: ${size_g}G"
((size_g >= 9)) || fail "root filesystem is ${size_g}G, want ~10G (growpart)"
[[ $(sshg cat /var/tmp/provisioned) == provisioned ]] || fail "runcmd did not write its marker once"

qga guest-get-osinfo || fail "guest-get-osinfo: no answer"
osinfo=$qga_out
echo "guest-get-osinfo: $(grep -o '"pretty-name": *"[^"]*"' <<<"$osinfo")"
grep -q '"id": *"debian"' <<<"$osinfo" || fail "guest-get-osinfo is not Debian: $osinfo"

t0=$(date +%s.%N)
printf '{"execute":"qmp_capabilities"}\n{"execute":"system_powerdown"}\n' |
	timeout 5 socat -t1 - "UNIX-CONNECT:$work/qmp.sock" >/dev/null
for _ in $(seq 1 600); do
	kill -0 "$qemu_pid" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$qemu_pid" 2>/dev/null && fail "QEMU still runs 60 s after system_powerdown"
wait "$qemu_pid" || true
qemu_pid=
echo "system_powerdown: QEMU exited after $(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s"
echo "OK: $img"
