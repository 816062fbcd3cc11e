package hypervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Hot-plugged disks (VirtualMachineBlockDeviceAttachment) are virtio-blk-pci devices on the
// pc machine's PCI bus 0, added and removed through its ACPI PCI hot-plug (Linux: acpiphp,
// built into Debian's kernels; Windows: built in). Each takes a slot of its own, named by
// the caller, from HotplugLastSlot down: the devices of the command line take slots from 2
// up, in order, so a running VM's layout is kept whatever is hot-plugged, and a migration
// target or a restarted VM started with the same hot-plugged disks at the same slots has the
// same layout as the source (QEMU migrates a device's state by its PCI address).
const (
	HotplugFirstSlot = 0x10
	HotplugLastSlot  = 0x1f
)

// HotplugDisk is a disk plugged into a running VM, or started with one as if it had been:
// Config.HotplugDisks. Format is raw or qcow2, as the caller knows it (never sniffed: it is
// checked against the file's header).
type HotplugDisk struct {
	Slot     int
	Path     string
	Format   string
	ReadOnly bool
}

// ID is the disk's name in QEMU: its device id and block node name, and its serial number
// as the guest reads it (Linux: /sys/block/vdX/serial, /dev/disk/by-id/virtio-<ID>).
func (d HotplugDisk) ID() string { return HotplugID(d.Slot) }

// HotplugID is the QEMU name of the hot-plugged disk at slot.
func HotplugID(slot int) string { return fmt.Sprintf("hotplug-%02x", slot) }

// HotplugAddress is the PCI address of the hot-plugged disk at slot, as the guest sees it
// (Linux: /dev/disk/by-path/pci-<address>).
func HotplugAddress(slot int) string { return fmt.Sprintf("0000:00:%02x.0", slot) }

// Validate checks what QEMU is given: a slot of the hot-plug range, a format QEMU will not
// probe, a path. Whether the file is one the VM may open is the caller's to check.
func (d HotplugDisk) Validate() error {
	switch {
	case d.Slot < HotplugFirstSlot || d.Slot > HotplugLastSlot:
		return fmt.Errorf("hot-plug slot %d is outside %d-%d", d.Slot, HotplugFirstSlot, HotplugLastSlot)
	case d.Format != "raw" && d.Format != "qcow2":
		return fmt.Errorf("hot-plugged disk %s: format %q is not raw or qcow2", d.Path, d.Format)
	case d.Path == "":
		return errors.New("hot-plugged disk: empty path")
	}
	return nil
}

// preflight checks the file as a disk of the command line is checked: it opens, and its
// header agrees with the declared format.
func (d HotplugDisk) preflight() error {
	if err := d.Validate(); err != nil {
		return err
	}
	disk := Disk{Path: d.Path, Format: d.Format, ReadOnly: d.ReadOnly}
	return checkDisk(&disk, false)
}

// blockdev is the disk's block node (blockdev-add's arguments, -blockdev's JSON): the
// format over the file, locked as the disks of the command line are (a second QEMU that
// opens it for writing fails), with the same host cache (cache=writeback).
func (d HotplugDisk) blockdev() map[string]any {
	return map[string]any{
		"driver":    d.Format,
		"node-name": d.ID(),
		"read-only": d.ReadOnly,
		"cache":     map[string]any{"direct": false, "no-flush": false},
		"file":      map[string]any{"driver": "file", "filename": d.Path, "locking": "on"},
	}
}

// device is the virtio-blk-pci device (device_add's arguments): at its slot of bus 0, its
// ID as serial number, and, when writable, the guest paused on an I/O error as for the
// disks of the command line (werror=stop,rerror=stop). No bootindex: an attached disk is
// not in the boot order (as in Deckhouse).
func (d HotplugDisk) device() map[string]any {
	dev := map[string]any{
		"driver":      "virtio-blk-pci",
		"id":          d.ID(),
		"drive":       d.ID(),
		"bus":         "pci.0",
		"addr":        "0x" + strconv.FormatInt(int64(d.Slot), 16),
		"serial":      d.ID(),
		"write-cache": "on",
	}
	if !d.ReadOnly {
		dev["werror"], dev["rerror"] = "stop", "stop"
	}
	return dev
}

// checkHotplugDisks checks the disks a VM starts with: each one valid, no slot twice.
func checkHotplugDisks(disks []HotplugDisk) error {
	seen := map[int]bool{}
	for _, d := range disks {
		if err := d.preflight(); err != nil {
			return err
		}
		if seen[d.Slot] {
			return fmt.Errorf("two hot-plugged disks at PCI slot %#x", d.Slot)
		}
		seen[d.Slot] = true
	}
	return nil
}

// hotplugArgs starts QEMU with the disks as they would be hot-plugged: -blockdev as JSON
// (a path needs no escaping), -device with the same properties. They come after every
// other device, so the others take the slots they take without them.
func hotplugArgs(disks []HotplugDisk) []string {
	var args []string
	for _, d := range disks {
		node, _ := json.Marshal(d.blockdev())
		dev := d.device()
		opt := "virtio-blk-pci"
		for _, k := range []string{"id", "drive", "bus", "addr", "serial", "write-cache", "werror", "rerror"} {
			if v, ok := dev[k]; ok {
				opt += "," + k + "=" + v.(string)
			}
		}
		args = append(args, "-blockdev", string(node), "-device", opt)
	}
	return args
}

// AttachDisk hot-plugs d into the running VM: its block node, then its device. It returns
// once QEMU has the device (QMP device_add succeeded); the guest sees it when its ACPI
// hot-plug handler has run (a moment later). On failure nothing is left behind.
func (inst *Instance) AttachDisk(ctx context.Context, d HotplugDisk) error {
	if err := d.preflight(); err != nil {
		return err
	}
	if err := inst.qmp.Execute(ctx, "blockdev-add", d.blockdev(), nil); err != nil {
		return fmt.Errorf("opening %s: %w", d.Path, err)
	}
	if err := inst.qmp.Execute(ctx, "device_add", d.device(), nil); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if derr := inst.qmp.Execute(cctx, "blockdev-del", map[string]any{"node-name": d.ID()}, nil); derr != nil {
			err = fmt.Errorf("%w (and removing its block node: %v)", err, derr)
		}
		return fmt.Errorf("adding device %s at PCI slot %#x: %w", d.ID(), d.Slot, err)
	}
	return nil
}

// unplugRepeat is how often the unplug request is sent again while the guest has not
// released the device: a request made while the guest could not take it (early in its
// boot) is lost, like a press of the power button.
const unplugRepeat = 5 * time.Second

// ErrUnplugPending is returned by DetachDisk when the guest has not released the device by
// the context's end; the device is still in the VM.
var ErrUnplugPending = errors.New("the guest has not released the device")

// DetachDisk hot-unplugs the disk at slot: it asks the guest to release the device (ACPI
// eject), waits until QEMU removed it (event DEVICE_DELETED), then closes its block node. A
// slot that holds no device is no error. When ctx ends first the device stays and the
// error wraps ErrUnplugPending.
func (inst *Instance) DetachDisk(ctx context.Context, slot int) error {
	id := HotplugID(slot)
	deleted := make(chan struct{})
	var once sync.Once
	remove := inst.qmp.AddEventHandler(func(ev Event) {
		if ev.Name != "DEVICE_DELETED" {
			return
		}
		var data struct {
			Device string `json:"device"`
		}
		if json.Unmarshal(ev.Data, &data) == nil && data.Device == id {
			once.Do(func() { close(deleted) })
		}
	})
	defer remove()
	gone := false
	for !gone {
		err := inst.qmp.Execute(ctx, "device_del", map[string]any{"id": id}, nil)
		var qe *QMPError
		switch {
		case errors.As(err, &qe) && qe.Class == "DeviceNotFound":
			gone = true
			continue
		case err != nil && ctx.Err() != nil:
			return fmt.Errorf("unplugging %s: %w: %w", id, ErrUnplugPending, ctx.Err())
		case err != nil && !errors.As(err, &qe):
			return fmt.Errorf("unplugging %s: %w", id, err)
		}
		// A QMP error other than "no such device" (an unplug already requested) leaves
		// the request standing: wait for the guest.
		t := time.NewTimer(unplugRepeat)
		select {
		case <-deleted:
			gone = true
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("unplugging %s: %w", id, ErrUnplugPending)
		case <-inst.done:
			t.Stop()
			return fmt.Errorf("unplugging %s: qemu exited", id)
		case <-t.C:
		}
		t.Stop()
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := inst.qmp.Execute(cctx, "blockdev-del", map[string]any{"node-name": id}, nil)
	var qe *QMPError
	if err != nil && !(errors.As(err, &qe) && strings.Contains(qe.Desc, "Failed to find node")) {
		return fmt.Errorf("closing the block node of %s: %w", id, err)
	}
	return nil
}
