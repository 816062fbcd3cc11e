package hypervisor

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
)

var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// checkDisk validates a disk image before QEMU sees it, so that a broken
// image gives a clear one-line error instead of a guest stuck in SeaBIOS.
// It fills in d.Format when empty. boot is true for the first disk.
func checkDisk(d *Disk, boot bool) error {
	if d.Path == "" {
		return fmt.Errorf("disk image: empty path")
	}
	f, err := os.Open(d.Path)
	if err != nil {
		return fmt.Errorf("disk image %s: %w", d.Path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("disk image %s: %w", d.Path, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("disk image %s: is a directory", d.Path)
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return fmt.Errorf("disk image %s: read: %w", d.Path, err)
	}
	head = head[:n]
	isQcow2 := bytes.HasPrefix(head, qcow2Magic)
	switch d.Format {
	case "":
		d.Format = "raw"
		if isQcow2 {
			d.Format = "qcow2"
		}
	case "qcow2":
		if !isQcow2 {
			return fmt.Errorf("disk image %s: not a qcow2 image (bad magic)", d.Path)
		}
	case "raw":
		if isQcow2 {
			return fmt.Errorf("disk image %s: declared raw but is a qcow2 image", d.Path)
		}
	}
	if d.Format == "raw" {
		if n == 0 {
			return fmt.Errorf("disk image %s: empty file", d.Path)
		}
		// A CD boots by El Torito, not by a boot sector.
		if boot && !d.CDROM && (n < 512 || head[510] != 0x55 || head[511] != 0xaa) {
			return fmt.Errorf("disk image %s: not bootable (no boot sector signature; corrupt or not a disk image)", d.Path)
		}
	}
	return nil
}

// KVMUsable reports whether hardware virtualization looks usable: the CPU
// advertises vmx or svm and /dev/kvm opens read-write with the stable API
// version. (Some sandboxes expose a /dev/kvm that passes the ioctl checks but
// cannot run real guests; they do not advertise vmx/svm.)
func KVMUsable() bool {
	if !cpuHasVirt() {
		return false
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	const kvmGetAPIVersion = 0xAE00
	v, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), kvmGetAPIVersion, 0)
	return errno == 0 && v == 12
}

func cpuHasVirt() bool {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, fl := range strings.Fields(line) {
			if fl == "vmx" || fl == "svm" {
				return true
			}
		}
		return false
	}
	return false
}
