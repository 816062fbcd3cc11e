package launcher

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// efiGuestImage is the test guest made bootable by UEFI firmware too: the guest image is
// a FAT file system that SeaBIOS boots through syslinux; this copy adds syslinux's EFI
// loader as the removable-media path \EFI\BOOT\BOOTX64.EFI (package syslinux-efi), with
// the same kernel, initramfs and command line. It is not signed: Secure Boot refuses it.
func efiGuestImage(t *testing.T) string {
	t.Helper()
	const (
		loader  = "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi"
		ldlinux = "/usr/lib/syslinux/modules/efi64/ldlinux.e64"
	)
	for _, f := range []string{loader, ldlinux} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v; run: apt-get install -y syslinux-efi syslinux-common (scripts/setup.sh)", err)
		}
	}
	for _, f := range []string{"OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd", "OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"} {
		if _, err := os.Stat(filepath.Join(hypervisor.DefaultFirmwareDir, f)); err != nil {
			t.Fatalf("%v; run: apt-get install -y ovmf (scripts/setup.sh)", err)
		}
	}
	src, err := os.ReadFile(guestImage(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "efi-guest.img")
	if err := os.WriteFile(img, src, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "syslinux.cfg")
	// syslinux.efi reads its configuration from its own directory; the paths are the
	// file system's root, where the BIOS boot finds the same files.
	if err := os.WriteFile(cfg, []byte("SERIAL 0 115200\nDEFAULT ferry\nPROMPT 0\nTIMEOUT 1\nLABEL ferry\n"+
		"  KERNEL /vmlinuz\n  INITRD /initrd.gz\n  APPEND console=ttyS0 quiet panic=-1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"mmd", "-i", img, "::EFI", "::EFI/BOOT"},
		{"mcopy", "-i", img, loader, "::EFI/BOOT/BOOTX64.EFI"},
		{"mcopy", "-i", img, ldlinux, "::EFI/BOOT/LDLINUX.E64"},
		{"mcopy", "-i", img, cfg, "::EFI/BOOT/syslinux.cfg"},
	} {
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	return img
}

func qemuCmdline(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", itoa(pid), "cmdline"))
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

func serialLog(runDir string) string {
	b, _ := os.ReadFile(filepath.Join(runDir, hypervisor.SerialLogName))
	return string(b)
}

// TestRunBootsUnderEFI: with bootloader EFI the guest boots through OVMF (Debian's ovmf)
// from its disk's EFI loader. The VM's variable store is created at its first start from
// OVMF's template, where the controller puts it (beside the VM's disks), and a second start
// uses that same file.
func TestRunBootsUnderEFI(t *testing.T) {
	img := efiGuestImage(t)
	vars := filepath.Join(t.TempDir(), "firmware", "ns", "uid-efi.fd")
	for start := 1; start <= 2; start++ {
		runDir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		// 256 MiB: syslinux.efi cannot allocate the kernel's memory in OVMF with 128 MiB.
		r := startRun(ctx, Options{VMName: "efi", Namespace: "default", CPUs: 1, Memory: "256Mi", RunDir: runDir,
			Disks: []string{img + ":raw:ro"}, OSType: "Generic", Bootloader: "EFI", EFIVars: vars})
		// TCG runs OVMF's start-up slowly: give it time.
		st := pollStatus(t, r, runDir, 150*time.Second, "heartbeat >= 2 under EFI", func(s Status) bool { return s.Heartbeat >= 2 })
		cmd := qemuCmdline(t, st.PID)
		for _, want := range []string{"-machine pc ", "unit=0,readonly=on,file=" + filepath.Join(hypervisor.DefaultFirmwareDir, "OVMF_CODE_4M.fd"),
			"unit=1,file=" + vars, "virtio-rng-pci"} {
			if !strings.Contains(cmd, want) {
				t.Errorf("start %d: QEMU's command line lacks %q: %s", start, want, cmd)
			}
		}
		if log := serialLog(runDir); !strings.Contains(log, "BdsDxe") || !strings.Contains(log, "FERRY-GUEST BOOTED") {
			t.Errorf("start %d: the serial log shows no OVMF boot: %q", start, log[:min(len(log), 2000)])
		}
		fi, err := os.Stat(vars)
		tmpl, _ := os.Stat(filepath.Join(hypervisor.DefaultFirmwareDir, "OVMF_VARS_4M.fd"))
		if err != nil || fi.Size() != tmpl.Size() {
			t.Fatalf("start %d: the VM's variable store: %v (%v bytes, template %d)", start, err, fi, tmpl.Size())
		}
		cancel()
		if code := r.wait(t, 60*time.Second); code != ExitStopped {
			t.Fatalf("start %d: exit code %d; log:\n%s", start, code, r.log)
		}
		t.Logf("start %d: booted under EFI, heartbeat %d", start, st.Heartbeat)
	}
}

// TestRunSecureBootRefusesAnUnsignedLoader: with EFIWithSecureBoot QEMU runs OVMF's secure
// build on q35 with SMM and the VM's variables start from Microsoft's keys: Secure Boot is
// on, and the firmware refuses the test guest's loader, which nobody signed. (Debian's
// shim-signed and grub-efi-amd64-signed boot under the same firmware up to a Debian
// kernel that says "UEFI Secure Boot is enabled"; the test guest has no signed loader.)
func TestRunSecureBootRefusesAnUnsignedLoader(t *testing.T) {
	img := efiGuestImage(t)
	vars := filepath.Join(t.TempDir(), "uid-secureboot.fd")
	runDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := startRun(ctx, Options{VMName: "sb", Namespace: "default", CPUs: 1, Memory: "256Mi", RunDir: runDir,
		Disks: []string{img + ":raw:ro"}, OSType: "Windows", Bootloader: "EFIWithSecureBoot", EFIVars: vars})
	st := pollStatus(t, r, runDir, 30*time.Second, "QEMU", func(s Status) bool { return s.PID > 0 })
	cmd := qemuCmdline(t, st.PID)
	for _, want := range []string{"-machine q35,smm=on ", "driver=cfi.pflash01,property=secure,value=on", "OVMF_CODE_4M.secboot.fd", "-rtc base=localtime"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("QEMU's command line lacks %q: %s", want, cmd)
		}
	}
	if strings.Contains(cmd, "hv-") && st.Accel == "tcg" {
		t.Errorf("Hyper-V enlightenments under TCG, where the guest sees none: %s", cmd)
	}
	deadline := time.Now().Add(150 * time.Second)
	for !strings.Contains(serialLog(runDir), "Access Denied") {
		if time.Now().After(deadline) {
			t.Fatalf("Secure Boot did not refuse the unsigned loader; serial log:\n%s\nlog:\n%s", serialLog(runDir), r.log)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if strings.Contains(serialLog(runDir), "FERRY-GUEST BOOTED") {
		t.Error("the unsigned guest booted under Secure Boot")
	}
	cancel()
	r.wait(t, 60*time.Second)
}

// TestRunEmulatedDevices: with enableParavirtualization false the guest's disk is on SATA
// (AHCI), and with osType Legacy on the PIIX IDE controller; the test guest boots from both
// (SeaBIOS reads them; the guest then runs from its initramfs).
func TestRunEmulatedDevices(t *testing.T) {
	img := guestImage(t)
	for _, tc := range []struct{ os, want string }{{"Generic", "ich9-ahci"}, {"Legacy", "ide-hd,drive=disk0,bootindex=1"}} {
		runDir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		r := startRun(ctx, Options{VMName: "emu", Namespace: "default", CPUs: 1, Memory: "128Mi", RunDir: runDir,
			Disks: []string{overlay(t, img) + ":qcow2"}, OSType: tc.os, Emulated: true})
		st := pollStatus(t, r, runDir, 120*time.Second, "heartbeat >= 1 on emulated devices", func(s Status) bool { return s.Heartbeat >= 1 })
		if cmd := qemuCmdline(t, st.PID); !strings.Contains(cmd, tc.want) || strings.Contains(cmd, "virtio-blk") {
			t.Errorf("%s: QEMU's command line lacks %q or has virtio-blk: %s", tc.os, tc.want, cmd)
		}
		cancel()
		r.wait(t, 60*time.Second)
	}
}

// TestRunWithoutFirmware: a node without OVMF refuses an EFI VM with a message that says
// what to install; the message is the pod's termination message, which the VM's status
// shows.
func TestRunWithoutFirmware(t *testing.T) {
	t.Setenv("FERRY_OVMF_DIR", t.TempDir())
	runDir := t.TempDir()
	disk := filepath.Join(t.TempDir(), "d.img")
	b := make([]byte, 1<<20)
	b[510], b[511] = 0x55, 0xaa
	if err := os.WriteFile(disk, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r := startRun(context.Background(), Options{VMName: "nofw", RunDir: runDir, Disks: []string{disk}, Bootloader: "EFI",
		EFIVars: filepath.Join(t.TempDir(), "v.fd")})
	if code := r.wait(t, 30*time.Second); code != ExitNoStart {
		t.Fatalf("exit code %d; log:\n%s", code, r.log)
	}
	msg, _ := os.ReadFile(filepath.Join(runDir, TerminationMessageName))
	if !strings.Contains(string(msg), "OVMF") || !strings.Contains(string(msg), "install Debian's ovmf package") {
		t.Errorf("termination message %q", msg)
	}
}

func TestParseDiskBootOrder(t *testing.T) {
	for in, want := range map[string]hypervisor.Disk{
		"/d/a.qcow2:qcow2:boot=2":          {Path: "/d/a.qcow2", Format: "qcow2", BootIndex: 2},
		"/s/x.iso:raw:ro:cdrom:boot=1":     {Path: "/s/x.iso", Format: "raw", ReadOnly: true, CDROM: true, BootIndex: 1},
		"/d/weird:boot=x":                  {Path: "/d/weird:boot=x"},
		"/d/a.img":                         {Path: "/d/a.img"},
		"/d/dir:boot=3/a.img:qcow2":        {Path: "/d/dir:boot=3/a.img", Format: "qcow2"},
		"/d/dir:boot=3/a.img:qcow2:boot=4": {Path: "/d/dir:boot=3/a.img", Format: "qcow2", BootIndex: 4},
	} {
		if got, err := parseDisk(in); err != nil || got != want {
			t.Errorf("parseDisk(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if _, err := parseDisk("/d/a:boot=0"); err == nil {
		t.Error("boot order 0 accepted")
	}
}

// TestMigrationUnderEFI: an EFI guest migrates live to a target that opens the VM's
// variable store, the file its source wrote (the controller gives both the same
// --efi-vars; QEMU takes the target's write lock only at switchover, as for disks), and
// goes on counting there without a reboot.
func TestMigrationUnderEFI(t *testing.T) {
	img := efiGuestImage(t)
	vars := filepath.Join(t.TempDir(), "uid-efi.fd")
	o := Options{VMName: "efimig", Namespace: "default", Memory: "256Mi", Disks: []string{img + ":raw:ro"},
		OSType: "Generic", Bootloader: "EFI", EFIVars: vars}
	src, srcDir := startVM(t, o)
	pollStatus(t, src, srcDir, 150*time.Second, "source heartbeat >= 2 under EFI", func(s Status) bool { return s.Heartbeat >= 2 })
	o.Incoming = true
	dst, dstDir := startVM(t, o)
	dstSt := pollStatus(t, dst, dstDir, 60*time.Second, "target incomingURI", func(s Status) bool { return s.IncomingURI != "" })
	if cmd := qemuCmdline(t, dstSt.PID); !strings.Contains(cmd, "unit=1,file="+vars) {
		t.Errorf("the target does not open the VM's variables: %s", cmd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := StartMigration(ctx, srcDir, MigrationRequest{URI: dstSt.IncomingURI, MaxBandwidthBytes: 1 << 30, DowntimeLimitMs: 300}); err != nil {
		t.Fatalf("StartMigration: %v", err)
	}
	if code := src.wait(t, 4*time.Minute); code != ExitMigrated {
		t.Fatalf("source exit code %d; log:\n%s", code, src.log)
	}
	srcLast := lastCNT(srcDir)
	pollStatus(t, dst, dstDir, 60*time.Second, "target running with a heartbeat beyond the source's last",
		func(s Status) bool { return s.QEMU == "running" && s.Heartbeat > srcLast })
	if strings.Contains(serialLog(dstDir), hypervisor.GuestBootedLine) {
		t.Errorf("the target's guest booted again:\n%s", serialLog(dstDir))
	}
}
