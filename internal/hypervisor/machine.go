package hypervisor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// Machine is the guest's virtual hardware beyond its CPUs, memory, disks and NICs: what a
// VM's osType, bootloader and enableParavirtualization choose. The zero Machine is the
// layout Ferry's launchers had before these existed (BIOS, virtio, nothing else): a
// launcher started with an older pod's arguments, as a migration target of a VM started
// before an upgrade is, builds exactly the machine the source runs.
type Machine struct {
	// OSType is "", "Generic", "Windows" or "Legacy" (the VM's spec.osType).
	OSType string
	// Firmware is BIOS (SeaBIOS, the zero value), EFI or EFISecureBoot (OVMF).
	Firmware Firmware
	// EFIVars is the VM's own copy of the firmware's variable store (EFI and
	// EFISecureBoot): kept beside its disks, so that boot entries and Secure Boot keys
	// survive restarts, and a migration's target opens the very file its source wrote.
	// Start creates it from the firmware's template when it does not exist (not for an
	// incoming migration, whose source made it).
	EFIVars string
	// Emulated gives the guest devices that need no virtio driver (enableParavirtualization
	// false): SATA disks and CD-ROMs on an AHCI controller and an e1000 NIC; IDE and an
	// RTL8139 NIC with OSType Legacy.
	Emulated bool
	// FirmwareDir holds OVMF's files; "" is Debian's /usr/share/OVMF (package ovmf).
	FirmwareDir string
}

// Firmware is a guest's firmware.
type Firmware string

const (
	FirmwareBIOS          Firmware = ""
	FirmwareEFI           Firmware = "EFI"
	FirmwareEFISecureBoot Firmware = "EFIWithSecureBoot"
)

// DefaultFirmwareDir is where Debian's ovmf package puts OVMF.
const DefaultFirmwareDir = "/usr/share/OVMF"

// OVMF's files in Debian's ovmf package (4 MiB flash builds): the code, and the variable
// store templates: empty for EFI, with Microsoft's keys enrolled (Secure Boot on) for
// EFISecureBoot, whose code is the build with SMM that QEMU's q35 machine runs securely.
const (
	ovmfCode          = "OVMF_CODE_4M.fd"
	ovmfVars          = "OVMF_VARS_4M.fd"
	ovmfSecureCode    = "OVMF_CODE_4M.secboot.fd"
	ovmfSecureVarsMS  = "OVMF_VARS_4M.ms.fd"
	firmwareMissingOn = "install Debian's ovmf package on the node"
)

// firmwareFiles are the code and variable template files of m's firmware.
func (m Machine) firmwareFiles() (code, vars string) {
	dir := m.FirmwareDir
	if dir == "" {
		dir = DefaultFirmwareDir
	}
	if m.Firmware == FirmwareEFISecureBoot {
		return filepath.Join(dir, ovmfSecureCode), filepath.Join(dir, ovmfSecureVarsMS)
	}
	return filepath.Join(dir, ovmfCode), filepath.Join(dir, ovmfVars)
}

// ErrFirmwareMissing is returned when the node lacks the firmware a VM boots with.
var ErrFirmwareMissing = errors.New("UEFI firmware (OVMF) missing")

// prepareFirmware checks that m's firmware is on the node and, for a cold start, that the
// VM's variable store exists, copying the template when it does not.
func (m Machine) prepareFirmware(incoming bool) error {
	if m.Firmware == FirmwareBIOS {
		return nil
	}
	code, tmpl := m.firmwareFiles()
	for _, f := range []string{code, tmpl} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%w: bootloader %s needs %s: %v; %s", ErrFirmwareMissing, m.Firmware, f, err, firmwareMissingOn)
		}
	}
	if m.EFIVars == "" {
		return fmt.Errorf("bootloader %s: no file for the VM's EFI variables", m.Firmware)
	}
	if _, err := os.Stat(m.EFIVars); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("EFI variables %s: %w", m.EFIVars, err)
	}
	if incoming {
		// The source's QEMU writes that file; a target with a fresh one would boot the
		// guest's next reboot from other variables.
		return fmt.Errorf("EFI variables %s of the migrating VM do not exist on this node's storage", m.EFIVars)
	}
	return copyFileAtomic(tmpl, m.EFIVars)
}

// copyFileAtomic copies src to dst through a temporary file in dst's directory, so that
// no reader ever sees half a variable store.
func copyFileAtomic(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return fmt.Errorf("EFI variables: %w", err)
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("EFI variables: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".efivars-*")
	if err != nil {
		return fmt.Errorf("EFI variables: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("EFI variables: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("EFI variables: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("EFI variables: %w", err)
	}
	// Link, not rename: a concurrent start that made the file first keeps its own.
	if err := os.Link(tmp.Name(), dst); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("EFI variables: %w", err)
	}
	return nil
}

// machineArgs are the -machine option and the firmware's options. Secure Boot needs q35
// with SMM (OVMF's secure build keeps its variables in SMM-protected flash); every other
// machine stays the i440fx "pc" Ferry's VMs ran on so far, whose root bus takes hot-plugged
// PCI devices and whose layout the VMs already running have.
func (m Machine) machineArgs() []string {
	if m.Firmware == FirmwareBIOS {
		return []string{"-machine", "pc"}
	}
	code, _ := m.firmwareFiles()
	machine := "pc"
	var args []string
	if m.Firmware == FirmwareEFISecureBoot {
		machine = "q35,smm=on"
		args = append(args, "-global", "driver=cfi.pflash01,property=secure,value=on")
	}
	return append([]string{"-machine", machine}, append(args,
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+qemuEscape(code),
		"-drive", "if=pflash,format=raw,unit=1,file="+qemuEscape(m.EFIVars))...)
}

// osArgs are the options osType adds. Windows: the clock in local time, as Windows keeps
// it, and under KVM the Hyper-V enlightenments Windows runs better with (QEMU 7.2 builds
// their CPUID leaves for KVM only: under TCG it accepts hv-* and the guest sees none, so
// they are left out). Generic: a virtio RNG, as Deckhouse gives Generic guests.
func (m Machine) osArgs(accel string) []string {
	switch m.OSType {
	case "Windows":
		return []string{"-rtc", "base=localtime,driftfix=slew"} // the hv-* features: cpuWithOS
	case "Generic":
		if !m.Emulated {
			return []string{"-device", "virtio-rng-pci,id=rng0"}
		}
	}
	return nil
}

// diskArgs attaches the disks; boot holds each disk's bootindex (0: not offered to the
// firmware). virtio-blk by default; emulated: SATA (AHCI controllers, six ports each) or,
// for Legacy, the PIIX IDE controller (four devices: the spec allows no more).
func (m Machine) diskArgs(disks []Disk, boot []int) []string {
	var args []string
	sata := m.Emulated && m.OSType != "Legacy"
	q35 := m.Firmware == FirmwareEFISecureBoot
	port := 0
	nextSATA := func() string {
		if q35 {
			// q35's own ICH9 AHCI: buses ide.0 to ide.5.
			if port < 6 {
				port++
				return "ide." + strconv.Itoa(port-1)
			}
		}
		n := port
		if q35 {
			n -= 6
		}
		if n%6 == 0 {
			args = append(args, "-device", fmt.Sprintf("ich9-ahci,id=sata%d", n/6))
		}
		port++
		return fmt.Sprintf("sata%d.%d", n/6, n%6)
	}
	for i, d := range disks {
		drive := fmt.Sprintf("if=none,id=disk%d,file=%s,format=%s,file.locking=on,cache=writeback",
			i, qemuEscape(d.Path), d.Format)
		device := "virtio-blk-pci"
		switch {
		case d.CDROM:
			drive += ",media=cdrom"
			device = "ide-cd"
		case m.Emulated:
			device = "ide-hd"
		}
		if sata && (d.CDROM || device == "ide-hd") {
			device += ",bus=" + nextSATA()
		}
		if d.ReadOnly || d.CDROM {
			drive += ",readonly=on"
		} else {
			// A failed write pauses the guest (QMP status io-error, event BLOCK_IO_ERROR)
			// instead of handing the error to a guest that may not survive it.
			drive += ",werror=stop,rerror=stop"
		}
		dev := fmt.Sprintf("%s,drive=disk%d", device, i)
		if boot[i] > 0 {
			dev += ",bootindex=" + strconv.Itoa(boot[i])
		}
		args = append(args, "-drive", drive, "-device", dev)
	}
	return args
}

// nicModel is the NIC's QEMU device.
func (m Machine) nicModel() string {
	switch {
	case !m.Emulated:
		return "virtio-net-pci"
	case m.OSType == "Legacy":
		return "rtl8139"
	default:
		return "e1000"
	}
}

// bootIndexes are the disks' bootindex values: their BootIndex where any disk has one
// (the others are not offered to the firmware), else their place in the list.
func bootIndexes(disks []Disk) []int {
	out := make([]int, len(disks))
	any := false
	for _, d := range disks {
		any = any || d.BootIndex > 0
	}
	for i, d := range disks {
		if any {
			out[i] = d.BootIndex
		} else {
			out[i] = i + 1
		}
	}
	return out
}

// bootDisk is the disk the firmware tries first.
func bootDisk(disks []Disk) int {
	idx := bootIndexes(disks)
	best := -1
	for i, b := range idx {
		if b > 0 && (best < 0 || b < idx[best]) {
			best = i
		}
	}
	return best
}

// cpuWithOS is -cpu's value with what osType adds to the processor: under KVM, a Windows
// guest's Hyper-V enlightenments, on the class's model or QEMU's default one.
func (m Machine) cpuWithOS(cpu, accel string) string {
	if m.OSType != "Windows" || accel != "kvm" {
		return cpu
	}
	if cpu == "" {
		cpu = "qemu64"
	}
	return cpu + ",hv-relaxed=on,hv-vapic=on,hv-spinlocks=0x1fff,hv-time=on"
}
