package hypervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMachineArgs: what each osType, bootloader and paravirtualization setting puts on
// QEMU's command line; the zero Machine keeps the layout of launchers before them.
func TestMachineArgs(t *testing.T) {
	disks := []Disk{{Path: "/s/root.qcow2", Format: "qcow2"}, {Path: "/s/seed.iso", Format: "raw", CDROM: true}}
	nics := []NIC{{MAC: "02:00:00:00:00:01"}}
	for _, tc := range []struct {
		name      string
		m         Machine
		disks     []Disk
		accel     string
		want, not []string
	}{
		{name: "zero: the old layout", m: Machine{},
			want: []string{"-machine pc -accel", "virtio-blk-pci,drive=disk0,bootindex=1", "ide-cd,drive=disk1,bootindex=2", "virtio-net-pci,netdev=net0"},
			not:  []string{"pflash", "virtio-rng", "ahci", "-rtc", "-cpu"}},
		{name: "Generic", m: Machine{OSType: "Generic"}, want: []string{"-machine pc -accel", "virtio-rng-pci"}},
		{name: "EFI", m: Machine{OSType: "Generic", Firmware: FirmwareEFI, EFIVars: "/s/firmware/ns/u-efi.fd"},
			want: []string{"-machine pc -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd -drive if=pflash,format=raw,unit=1,file=/s/firmware/ns/u-efi.fd"},
			not:  []string{"smm", "secure"}},
		{name: "Secure Boot", m: Machine{Firmware: FirmwareEFISecureBoot, EFIVars: "/v.fd"},
			want: []string{"-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on", "file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"}},
		{name: "Windows under TCG", m: Machine{OSType: "Windows"}, accel: "tcg", want: []string{"-rtc base=localtime"}, not: []string{"hv-", "virtio-rng"}},
		{name: "Windows under KVM", m: Machine{OSType: "Windows"}, accel: "kvm", want: []string{"-rtc base=localtime", "-cpu qemu64,hv-relaxed=on,hv-vapic=on,hv-spinlocks=0x1fff,hv-time=on"}},
		{name: "emulated", m: Machine{OSType: "Generic", Emulated: true},
			want: []string{"-device ich9-ahci,id=sata0", "ide-hd,bus=sata0.0,drive=disk0,bootindex=1", "ide-cd,bus=sata0.1,drive=disk1,bootindex=2", "e1000,netdev=net0"},
			not:  []string{"virtio-blk", "virtio-net", "virtio-rng"}},
		{name: "emulated on q35", m: Machine{Firmware: FirmwareEFISecureBoot, EFIVars: "/v.fd", Emulated: true},
			want: []string{"ide-hd,bus=ide.0,drive=disk0", "ide-cd,bus=ide.1,drive=disk1"}, not: []string{"ich9-ahci"}},
		{name: "Legacy emulated", m: Machine{OSType: "Legacy", Emulated: true},
			want: []string{"ide-hd,drive=disk0,bootindex=1", "ide-cd,drive=disk1,bootindex=2", "rtl8139,netdev=net0"}, not: []string{"ahci", "virtio-blk"}},
		{name: "boot order", disks: []Disk{{Path: "/a", Format: "raw", BootIndex: 2}, {Path: "/b", Format: "raw"}, {Path: "/c.iso", Format: "raw", CDROM: true, BootIndex: 1}},
			want: []string{"virtio-blk-pci,drive=disk0,bootindex=2 ", "virtio-blk-pci,drive=disk1 ", "ide-cd,drive=disk2,bootindex=1 "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.disks
			if d == nil {
				d = disks
			}
			accel := tc.accel
			if accel == "" {
				accel = "tcg"
			}
			line := strings.Join(buildArgs(Config{RunDir: "/r", CPUs: 1, MemoryKiB: 131064, Disks: d, NICs: nics, Machine: tc.m}, accel), " ") + " "
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("lacks %q:\n%s", w, line)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(line, n) {
					t.Errorf("has %q:\n%s", n, line)
				}
			}
		})
	}
}

// TestManySATADisks: more disks than an AHCI controller has ports get a second one.
func TestManySATADisks(t *testing.T) {
	var disks []Disk
	for i := 0; i < 8; i++ {
		disks = append(disks, Disk{Path: "/d", Format: "raw"})
	}
	line := strings.Join(Machine{Emulated: true}.diskArgs(disks, bootIndexes(disks)), " ")
	for _, w := range []string{"ich9-ahci,id=sata0", "ich9-ahci,id=sata1", "bus=sata0.5,drive=disk5", "bus=sata1.1,drive=disk7"} {
		if !strings.Contains(line, w) {
			t.Errorf("lacks %q: %s", w, line)
		}
	}
}

// TestPrepareFirmware: a cold start copies the template once and keeps the VM's file
// after; an incoming migration needs the source's file; a node without OVMF says what
// to install.
func TestPrepareFirmware(t *testing.T) {
	fw := t.TempDir()
	for _, f := range []string{ovmfCode, ovmfVars, ovmfSecureCode, ovmfSecureVarsMS} {
		if err := os.WriteFile(filepath.Join(fw, f), []byte("template "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vars := filepath.Join(t.TempDir(), "firmware", "ns", "u-secureboot.fd")
	m := Machine{Firmware: FirmwareEFISecureBoot, EFIVars: vars, FirmwareDir: fw}
	if err := m.prepareFirmware(true); err == nil {
		t.Error("an incoming migration started without the source's variables")
	}
	if err := m.prepareFirmware(false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(vars); string(b) != "template "+ovmfSecureVarsMS {
		t.Errorf("variables %q", b)
	}
	if err := os.WriteFile(vars, []byte("the guest's own"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.prepareFirmware(false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(vars); string(b) != "the guest's own" {
		t.Errorf("a restart replaced the VM's variables: %q", b)
	}
	if err := m.prepareFirmware(true); err != nil {
		t.Errorf("incoming with the source's variables: %v", err)
	}
	m.FirmwareDir = t.TempDir()
	if err := m.prepareFirmware(false); err == nil || !strings.Contains(err.Error(), "install Debian's ovmf package") {
		t.Errorf("without OVMF: %v", err)
	}
}
