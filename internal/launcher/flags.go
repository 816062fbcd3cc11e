package launcher

import (
	"strconv"

	"github.com/spf13/pflag"

	"github.com/ferryvm/ferry/internal/disklease"
)

// Flags are the launcher's flags, for ferry-launcher, `ferry launcher` and the simulated
// nodes, which parse a launcher pod's arguments with them. o.RunDir is --run-dir's default.
func Flags(f *pflag.FlagSet, o *Options) {
	f.StringVar(&o.VMName, "vm", "", "VM name")
	f.StringVar(&o.Namespace, "namespace", "", "VM namespace")
	f.IntVar(&o.CPUs, "cpus", 1, "virtual CPUs")
	f.StringVar(&o.Memory, "memory", "128Mi", "guest memory")
	f.StringVar(&o.CPUModel, "cpu-model", "", "the guest's QEMU CPU model (e.g. Nehalem; host: the node's CPU, QEMU's max without KVM); empty: QEMU's default")
	f.StringVar(&o.CPUFeatures, "cpu-features", "", "CPU features the model must have on top, comma-separated (e.g. sse4_2,popcnt)")
	f.StringArrayVar(&o.Disks, "disk", nil, "disk path[:format][:ro][:cdrom], first boots (repeatable)")
	f.StringVar(&o.RunDir, "run-dir", o.RunDir, "directory for sockets and the serial log (env FERRY_RUN_DIR)")
	f.BoolVar(&o.Incoming, "incoming", false, "wait for an incoming live migration")
	f.StringVar(&o.IncomingFrom, "incoming-from", "", "the node the incoming migration comes from: over migration TLS only its certificate is accepted (empty: any Ferry node's)")
	f.StringVar(&o.MigrationAddress, "migration-address", "", "address an incoming migration listens on (default $FERRY_NODE_IP, else 127.0.0.1)")
	f.Int64Var(&o.FencingToken, "fencing-token", 0, "token for the disk lease <first writable disk>.lease; a higher one fences this instance (0: no lease)")
	f.StringVar(&o.IP, "ip", "", "the VM's address and the VM range's prefix length (e.g. 10.66.10.5/24): the VM gets a NIC on a tap, the address by DHCP, and a route here while it runs (needs CAP_NET_ADMIN); empty: no NIC")
	f.StringVar(&o.Gateway, "gateway", "", "the guest's default gateway (with --ip)")
	f.StringVar(&o.MAC, "mac", "", "the guest NIC's MAC (default: derived from --ip)")
	f.DurationVar(&o.ShutdownGrace, "shutdown-grace", ShutdownGrace, "how long the guest has to power off when the VM is stopped (ACPI power button, then the guest agent's shutdown) before QEMU is quit")
	f.StringArrayVar(&o.HotplugDisks, "hotplug-disk", nil, "a disk the VM starts with as if hot-plugged: SLOT,NAME,PATH[:FORMAT][:ro] (repeatable)")
	f.StringVar(&o.HotplugRoot, "hotplug-root", "", "the directory every hot-plugged disk must be in (the shared storage); empty: no hot-plug")
	f.DurationVar(&o.LeaseTTL, "lease-ttl", disklease.DefaultTTL, "how long a disk lease renewal vouches for this instance (renewed every third of it)")
	f.StringVar(&o.OSType, "os-type", "", "the VM's osType: Generic, Windows or Legacy (empty: the machine of launchers before osType)")
	f.StringVar(&o.Bootloader, "bootloader", "", "the VM's firmware: BIOS (SeaBIOS), EFI or EFIWithSecureBoot (OVMF, from $FERRY_OVMF_DIR or /usr/share/OVMF)")
	f.StringVar(&o.EFIVars, "efi-vars", "", "the VM's EFI variable store (with an EFI bootloader), created from OVMF's template when missing")
	f.VarPF((*paravirtFlag)(&o.Emulated), "paravirtualization", "", "virtio disks and NIC; false: emulated ones (SATA and e1000, IDE and RTL8139 with --os-type Legacy)").NoOptDefVal = "true"
}

// paravirtFlag is --paravirtualization, stored as its opposite (Options.Emulated), whose
// zero value is the default.
type paravirtFlag bool

func (p *paravirtFlag) String() string { return strconv.FormatBool(!bool(*p)) }
func (p *paravirtFlag) Type() string   { return "bool" }
func (p *paravirtFlag) Set(s string) error {
	v, err := strconv.ParseBool(s)
	*p = paravirtFlag(!v)
	return err
}
