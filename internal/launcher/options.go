package launcher

import (
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// Options configures one VM pod's launcher.
type Options struct {
	VMName, Namespace string
	CPUs              int
	// Memory is a Kubernetes-style quantity: "128Mi", "1Gi", "1.5Gi",
	// "512M", "134217728". Default 128Mi.
	Memory string
	// Disks are "path[:format][:ro][:cdrom]"; the first disk boots. Format defaults to
	// sniffing (qcow2 by magic, raw otherwise).
	Disks []string
	// RunDir holds QEMU's sockets and logs, launcher.sock and
	// termination-message.
	RunDir string
	// Incoming starts QEMU waiting for an incoming live migration: it
	// listens on a free TCP port of MigrationAddress (Status.IncomingURI).
	Incoming bool
	// IncomingFrom (flag --incoming-from) is the node the incoming migration comes from:
	// over migration TLS, QEMU takes the stream only from that node's certificate, not
	// from any Ferry node's. The migration controller names it in the target pod, which
	// only it may write. Empty (a launcher of an older controller): any Ferry node.
	IncomingFrom string
	// MigrationAddress is the address an incoming migration listens on
	// (flag --migration-address); default $FERRY_NODE_IP, else 127.0.0.1.
	MigrationAddress string
	// MigrationTLSDir is the node's migration credentials directory (package
	// migrationtls), kept by the node agent, which names it in
	// $FERRY_MIGRATION_TLS_DIR (the default). Set, migrations in and out are TLS
	// with both ends' certificates checked, and a node without valid credentials
	// refuses them (the guest stays where it runs). "" migrates in the clear.
	MigrationTLSDir string
	// FencingToken (flag --fencing-token) is this instance's token for the
	// disk lease, <first writable disk>.lease (package disklease); the
	// controller gives every cold start a token higher than any before. A
	// migration target carries the source's token and takes the lease over
	// once the guest runs on it. 0 runs without a lease.
	FencingToken int64
	// IP (flag --ip) is the VM's address with the VM range's prefix length, e.g.
	// 10.66.10.5/24; set, the VM gets a virtio NIC on a tap device (package vmnet), the
	// guest gets the address by DHCP and the node routes it while the guest runs here.
	// "" runs the VM without a NIC.
	IP string
	// Gateway (flag --gateway) is the guest's default gateway.
	Gateway string
	// MAC (flag --mac) is the guest NIC's address; default vmnet.GuestMAC of IP.
	MAC string
	// ShutdownGrace (flag --shutdown-grace) is how long the guest has to power off after the
	// ACPI power button (and, a third of the way in, the guest agent's shutdown) before
	// QEMU is quit. The controller sets it from the VM's terminationGracePeriodSeconds,
	// less the time the pod needs to end. 0 means ShutdownGrace.
	ShutdownGrace time.Duration
	// CPUModel (flag --cpu-model) is the guest's QEMU CPU model, from the VM's class
	// (vmclass.CPUOf): a model name, "host" (the node's CPU; QEMU's max under TCG), or ""
	// for QEMU's default. CPUFeatures (flag --cpu-features) are features the model must
	// have on top, comma-separated. hypervisor.ParseCPU checks both.
	CPUModel, CPUFeatures string
	// HotplugDisks (flag --hotplug-disk, repeatable) are disks the VM starts with as if
	// they had been hot-plugged: "SLOT,NAME,PATH[:FORMAT][:ro]" (HotplugDiskArg). A
	// migration target gets its source's, at the same slots; a VM started again, those of
	// its VirtualMachineBlockDeviceAttachments.
	HotplugDisks []string
	// HotplugRoot (flag --hotplug-root) is the directory every hot-plugged disk must be in
	// (the shared storage); "" hot-plugs none.
	HotplugRoot string
	// LeaseTTL (flag --lease-ttl) is how long a lease renewal vouches for
	// this instance; it renews every LeaseTTL/3. 0 means disklease.DefaultTTL.
	LeaseTTL time.Duration

	// OSType (flag --os-type) is the VM's spec.osType: Generic, Windows or Legacy. Empty
	// (a pod of a controller before it) builds the machine such launchers built.
	OSType string
	// Bootloader (flag --bootloader) is BIOS (or empty), EFI or EFIWithSecureBoot.
	Bootloader string
	// EFIVars (flag --efi-vars) is the VM's EFI variable store on the shared storage,
	// created from OVMF's template at the VM's first EFI start.
	EFIVars string
	// Emulated (flag --paravirtualization=false) gives the guest emulated disks and NIC
	// instead of virtio ones.
	Emulated bool
}

// machine is the guest's hardware o asks for.
func (o Options) machine() (hypervisor.Machine, error) {
	m := hypervisor.Machine{OSType: o.OSType, Emulated: o.Emulated, EFIVars: o.EFIVars}
	switch o.OSType {
	case "", "Generic", "Windows", "Legacy":
	default:
		return m, fmt.Errorf("unknown --os-type %q (Generic, Windows or Legacy)", o.OSType)
	}
	switch o.Bootloader {
	case "", "BIOS":
	case "EFI":
		m.Firmware = hypervisor.FirmwareEFI
	case "EFIWithSecureBoot":
		m.Firmware = hypervisor.FirmwareEFISecureBoot
	default:
		return m, fmt.Errorf("unknown --bootloader %q (BIOS, EFI or EFIWithSecureBoot)", o.Bootloader)
	}
	if o.OSType == "Legacy" && m.Firmware != hypervisor.FirmwareBIOS {
		return m, fmt.Errorf("--os-type Legacy boots with BIOS only, not %s", o.Bootloader)
	}
	if m.Firmware != hypervisor.FirmwareBIOS && o.EFIVars == "" {
		return m, fmt.Errorf("--bootloader %s needs --efi-vars", o.Bootloader)
	}
	m.FirmwareDir = os.Getenv("FERRY_OVMF_DIR")
	return m, nil
}

// leaseFile is the disk lease of the first writable disk ("" with no token or
// no writable disk: read-only images are shared by design).
func leaseFile(o Options, disks []hypervisor.Disk) string {
	if o.FencingToken <= 0 {
		return ""
	}
	for _, d := range disks {
		if !d.ReadOnly {
			return d.Path + ".lease"
		}
	}
	return ""
}

// leaseHolder names this instance in the disk lease. The launcher is not told
// its pod's UID, but its run directory is unique per pod (the node agent names
// it <state-dir>/pods/<pod UID>); the pod's namespace/name (FERRY_POD_NAMESPACE,
// FERRY_POD_NAME from the agent) is added for people reading the lease.
func leaseHolder(o Options) string {
	dir, err := filepath.Abs(o.RunDir)
	if err != nil {
		dir = o.RunDir
	}
	if pod := os.Getenv("FERRY_POD_NAME"); pod != "" {
		if ns := os.Getenv("FERRY_POD_NAMESPACE"); ns != "" {
			pod = ns + "/" + pod
		}
		return pod + " (" + dir + ")"
	}
	return dir
}

// leaseNode is the node the lease names: FERRY_NODE_NAME (set by the node
// agent), else the host name.
func leaseNode() string {
	if n := os.Getenv("FERRY_NODE_NAME"); n != "" {
		return n
	}
	n, _ := os.Hostname()
	return n
}

var binarySuffixes = map[string]int64{
	"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60,
}

var decimalSuffixes = map[string]int64{
	"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
}

// ParseMemory parses a Kubernetes-style memory quantity into bytes. It
// accepts binary (Ki..Ei) and decimal (k..E) suffixes, decimal fractions
// ("1.5Gi") and exponents ("1e9"); the result must be a positive whole
// number of bytes.
func ParseMemory(s string) (int64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("memory: empty quantity")
	}
	num, mult := in, int64(1)
	found := false
	for suf, m := range binarySuffixes {
		if strings.HasSuffix(in, suf) {
			num, mult, found = strings.TrimSuffix(in, suf), m, true
			break
		}
	}
	if !found {
		if i := strings.IndexAny(in, "eE"); i > 0 && i < len(in)-1 {
			// Exponent form: 1e9, 5E6 (a trailing E is the exa suffix).
			num = in
		} else {
			last := in[len(in)-1:]
			if m, ok := decimalSuffixes[last]; ok && last != "" {
				num, mult = in[:len(in)-1], m
			}
		}
	}
	if num == "" || strings.HasPrefix(num, "-") || strings.ContainsAny(num, "/ ") {
		return 0, fmt.Errorf("memory: invalid quantity %q", s)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("memory: invalid quantity %q", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() || r.Sign() <= 0 || !r.Num().IsInt64() {
		return 0, fmt.Errorf("memory: %q is not a positive whole number of bytes", s)
	}
	return r.Num().Int64(), nil
}

// memoryKiB converts a quantity to the KiB value handed to QEMU, applying
// hypervisor.SafeMemoryKiB (a 128Mi request runs as 131064K, see there).
func memoryKiB(s string) (int64, error) {
	if s == "" {
		s = "128Mi"
	}
	b, err := ParseMemory(s)
	if err != nil {
		return 0, err
	}
	kib := b / 1024
	if kib < 16*1024 {
		return 0, fmt.Errorf("memory: %s is too small (minimum 16Mi)", s)
	}
	return hypervisor.SafeMemoryKiB(kib), nil
}

var diskFormats = map[string]bool{
	"raw": true, "qcow2": true, "qed": true, "vmdk": true, "vdi": true, "vhdx": true, "vpc": true, "luks": true,
}

// parseDisk parses "path[:format][:ro][:cdrom][:boot=N]". A suffix that is not a known
// format is part of the path; ":ro" attaches the disk read-only (a shared boot image);
// ":cdrom" attaches it as a CD-ROM, which is always read-only; ":boot=N" gives its place
// in the boot order (hypervisor.Disk.BootIndex).
func parseDisk(s string) (hypervisor.Disk, error) {
	var d hypervisor.Disk
	if i := strings.LastIndex(s, ":boot="); i >= 0 {
		if n, err := strconv.Atoi(s[i+len(":boot="):]); err == nil {
			if n < 1 || n > 1<<16 {
				return hypervisor.Disk{}, fmt.Errorf("disk: boot order %d out of range", n)
			}
			s, d.BootIndex = s[:i], n
		}
	}
	if rest, ok := strings.CutSuffix(s, ":cdrom"); ok {
		s, d.CDROM, d.ReadOnly = rest, true, true
	}
	if rest, ok := strings.CutSuffix(s, ":ro"); ok {
		s, d.ReadOnly = rest, true
	}
	if s == "" {
		return hypervisor.Disk{}, fmt.Errorf("disk: empty path")
	}
	d.Path = s
	if i := strings.LastIndexByte(s, ':'); i > 0 && diskFormats[s[i+1:]] {
		d.Path, d.Format = s[:i], s[i+1:]
	}
	return d, nil
}
