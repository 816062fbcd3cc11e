// Package guestimage builds Ferry's tiny bootable guest image (a Debian kernel and a
// busybox init that prints a heartbeat counter on the serial console) with the script
// embedded here, so the ferry binary can make it on any machine with the packages.
package guestimage
