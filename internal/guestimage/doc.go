// Package guestimage builds Ferry's guest images with the scripts embedded here, so the
// ferry binary and the tests can make them on any Debian 12 machine:
//
//   - Ensure: the tiny test guest (a Debian kernel and a busybox init that prints a
//     heartbeat counter on the serial console), a raw image in a state directory;
//   - EnsureDebian: a Debian 12 cloud image built from Debian packages with mmdebstrap
//     (systemd, cloud-init with the NoCloud datasource, openssh-server,
//     qemu-guest-agent), a compressed qcow2 cached outside the checkout and named after
//     the script's hash. It holds nothing of Ferry: a VM from it is configured only
//     through what any cloud gives a guest (a cidata seed, DHCP, the guest agent).
//
// The package only builds files; it never starts a guest.
package guestimage
