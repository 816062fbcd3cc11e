package launcher

// Hot-plugged disks (VirtualMachineBlockDeviceAttachment): the node agent hands the launcher
// the whole set of disks its VM should have hot-plugged (PUT /blockdevices, from the launcher
// pod's annotation that only Ferry's controller writes); the launcher brings QEMU there one
// device at a time and reports each one (Status.BlockDevices). A disk counts as attached only
// once QEMU has the device. A migration target, or a VM started again, is given the disks
// with --hotplug-disk and starts with them at the same PCI slots.
//
// Hot-plug and migration exclude each other: no disk is attached or detached while a
// migration runs or while a target waits for one, and a migration is refused while a disk
// is being attached or detached, or when the target was started with other hot-plugged
// disks than the VM has (QEMU needs the same devices on both sides).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// BlockDevice is a disk the VM has hot-plugged, or is to have.
type BlockDevice struct {
	// Slot is its PCI slot on bus 0, hypervisor.HotplugFirstSlot to HotplugLastSlot: the
	// caller chooses it, and keeps it across migrations and restarts.
	Slot int `json:"slot"`
	// Name says what the disk is for (the VirtualMachineBlockDeviceAttachment's name).
	Name string `json:"name"`
	// Path is the disk's file; it must be under the launcher's --hotplug-root.
	Path string `json:"path"`
	// Format is raw or qcow2.
	Format   string `json:"format"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// The states of a hot-plugged disk (BlockDeviceStatus.State).
const (
	BlockAttaching = "attaching"
	BlockAttached  = "attached" // QEMU has the device
	BlockDetaching = "detaching"
	BlockFailed    = "failed" // QEMU refused it; the VM does not have it
)

// BlockDeviceStatus is a hot-plugged disk as the launcher has it (Status.BlockDevices).
type BlockDeviceStatus struct {
	BlockDevice
	// Target is the device's name in QEMU, also its serial number in the guest.
	Target string `json:"target"`
	// State is attaching, attached, detaching or failed.
	State string `json:"state"`
	// Error says why an attach failed, or why a detach has not happened yet.
	Error string `json:"error,omitempty"`
}

// BlockDevicesRequest is the body of PUT /blockdevices: every disk the VM is to have
// hot-plugged (none: every hot-plugged disk is detached).
type BlockDevicesRequest struct {
	Devices []BlockDevice `json:"devices"`
}

// MaxBlockDevices bounds the hot-plugged disks of a VM: one per slot of the hot-plug range.
const MaxBlockDevices = hypervisor.HotplugLastSlot - hypervisor.HotplugFirstSlot + 1

// maxPath bounds a disk's path (Linux's PATH_MAX).
const maxPath = 4096

// validateBlockDevices checks a set of disks against the hot-plug root: slots in range and
// used once, names, formats QEMU will not probe, and files under root (also once their
// symbolic links are followed), so that no annotation can hand the guest a host file.
func validateBlockDevices(devs []BlockDevice, root string) error {
	if len(devs) > 0 && root == "" {
		return errors.New("this launcher was started without --hotplug-root: it hot-plugs no disk")
	}
	if len(devs) > MaxBlockDevices {
		return fmt.Errorf("%d disks: at most %d can be hot-plugged", len(devs), MaxBlockDevices)
	}
	slots, names := map[int]bool{}, map[string]bool{}
	for _, d := range devs {
		if err := validateBlockDevice(d, root); err != nil {
			return err
		}
		if slots[d.Slot] {
			return fmt.Errorf("slot %d is named twice", d.Slot)
		}
		if names[d.Name] {
			return fmt.Errorf("disk %q is named twice", d.Name)
		}
		slots[d.Slot], names[d.Name] = true, true
	}
	return nil
}

func validateBlockDevice(d BlockDevice, root string) error {
	hd := hypervisor.HotplugDisk{Slot: d.Slot, Path: d.Path, Format: d.Format, ReadOnly: d.ReadOnly}
	if err := hd.Validate(); err != nil {
		return err
	}
	if errs := validation.IsDNS1123Subdomain(d.Name); len(errs) > 0 {
		return fmt.Errorf("disk name %q: %s", d.Name, strings.Join(errs, "; "))
	}
	if len(d.Path) > maxPath || !filepath.IsAbs(d.Path) || filepath.Clean(d.Path) != d.Path || strings.ContainsRune(d.Path, 0) {
		return fmt.Errorf("disk %s: path %q is not a clean absolute path", d.Name, d.Path)
	}
	if !within(root, d.Path) {
		return fmt.Errorf("disk %s: %s is not under the hot-plug root %s", d.Name, d.Path, root)
	}
	return nil
}

// within tells whether path is root or below it.
func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// resolveUnder follows the path's symbolic links and checks the file is still under root:
// a link on the storage must not lead the guest elsewhere.
func resolveUnder(root, path string) error {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return fmt.Errorf("hot-plug root %s: %w", root, err)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	if !within(realRoot, real) {
		return fmt.Errorf("%s leads to %s, outside the hot-plug root %s", path, real, root)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	return nil
}

// parseHotplugDisk parses --hotplug-disk SLOT,NAME,PATH[:FORMAT][:ro].
func parseHotplugDisk(s string) (BlockDevice, error) {
	parts := strings.SplitN(s, ",", 3)
	if len(parts) != 3 {
		return BlockDevice{}, fmt.Errorf("hot-plugged disk %q: want SLOT,NAME,PATH[:FORMAT][:ro]", s)
	}
	slot, err := strconv.Atoi(parts[0])
	if err != nil {
		return BlockDevice{}, fmt.Errorf("hot-plugged disk %q: slot: %w", s, err)
	}
	d, err := parseDisk(parts[2])
	if err != nil {
		return BlockDevice{}, fmt.Errorf("hot-plugged disk %q: %w", s, err)
	}
	if d.CDROM {
		return BlockDevice{}, fmt.Errorf("hot-plugged disk %q: a hot-plugged disk is no CD-ROM", s)
	}
	return BlockDevice{Slot: slot, Name: parts[1], Path: d.Path, Format: d.Format, ReadOnly: d.ReadOnly}, nil
}

// HotplugDiskArg renders d as the value of --hotplug-disk.
func HotplugDiskArg(d BlockDevice) string {
	arg := strconv.Itoa(d.Slot) + "," + d.Name + "," + d.Path + ":" + d.Format
	if d.ReadOnly {
		arg += ":ro"
	}
	return arg
}

// startHotplugged parses Options.HotplugDisks into cfg: the disks QEMU starts with as if
// hot-plugged.
// Files are checked on a node (checkFiles); simulated VMs have none.
func startHotplugged(o Options, cfg *hypervisor.Config, checkFiles bool) ([]BlockDevice, error) {
	var devs []BlockDevice
	for _, a := range o.HotplugDisks {
		d, err := parseHotplugDisk(a)
		if err != nil {
			return nil, err
		}
		devs = append(devs, d)
	}
	if err := validateBlockDevices(devs, o.HotplugRoot); err != nil {
		return nil, err
	}
	for _, d := range devs {
		if err := resolveUnder(o.HotplugRoot, d.Path); err != nil && checkFiles {
			return nil, fmt.Errorf("hot-plugged disk %s: %w", d.Name, err)
		}
		cfg.HotplugDisks = append(cfg.HotplugDisks, d.disk())
	}
	return devs, nil
}

func (d BlockDevice) disk() hypervisor.HotplugDisk {
	return hypervisor.HotplugDisk{Slot: d.Slot, Path: d.Path, Format: d.Format, ReadOnly: d.ReadOnly}
}

// blockEntry is one hot-plugged disk of the VM.
type blockEntry struct {
	dev   BlockDevice
	state string
	err   string
	// retryAt is when a detach the guest did not answer is asked for again (zero: none
	// was tried yet).
	retryAt time.Time
}

// hotplug is the launcher's hot-plugged disks; its fields are guarded by launcher.mu.
type hotplug struct {
	root string
	// checkFiles resolves a disk's path on the node before it is attached (simulated VMs
	// have no files).
	checkFiles bool
	desired    []BlockDevice
	entries    map[int]*blockEntry
	busy       bool
	wake       chan struct{}
	// startWorker starts runHotplug once, on the first request that changes anything: a
	// VM that never hot-plugs costs no goroutine (simulated nodes run thousands).
	startWorker func()
}

// Timing of detaches: how long the guest has to release a device, and when it is asked
// again when it did not.
var (
	detachTimeout = time.Minute
	detachRetry   = 30 * time.Second
)

// newHotplug starts with the disks QEMU was started with (attached) as the desired set.
func newHotplug(root string, started []BlockDevice, checkFiles bool) *hotplug {
	h := &hotplug{root: root, checkFiles: checkFiles, entries: map[int]*blockEntry{}, wake: make(chan struct{}, 1)}
	for _, d := range started {
		h.entries[d.Slot] = &blockEntry{dev: d, state: BlockAttached}
	}
	h.desired = slices.Clone(started)
	return h
}

func (h *hotplug) kick() {
	if h == nil {
		return
	}
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// statuses lists the disks by slot. Call with launcher.mu held.
func (h *hotplug) statuses() []BlockDeviceStatus {
	if h == nil || len(h.entries) == 0 {
		return nil
	}
	out := make([]BlockDeviceStatus, 0, len(h.entries))
	for _, e := range h.entries {
		out = append(out, BlockDeviceStatus{BlockDevice: e.dev, Target: hypervisor.HotplugID(e.dev.Slot), State: e.state, Error: e.err})
	}
	slices.SortFunc(out, func(a, b BlockDeviceStatus) int { return a.Slot - b.Slot })
	return out
}

// wanted returns the desired disk at slot.
func (h *hotplug) wanted(slot int) (BlockDevice, bool) {
	for _, d := range h.desired {
		if d.Slot == slot {
			return d, true
		}
	}
	return BlockDevice{}, false
}

// unsettled says what keeps the disks from a stable layout a migration can copy: a device
// being added or removed, a disk asked for and not tried yet, one to remove that was not
// asked to go yet. "" when settled. A detach the guest did not answer does not count: QEMU
// still has the device, and the target gets it. Call with launcher.mu held.
func (h *hotplug) unsettled() string {
	if h == nil {
		return ""
	}
	for _, e := range h.entries {
		switch {
		case e.state == BlockAttaching:
			return fmt.Sprintf("disk %s is being attached (%s)", e.dev.Name, hypervisor.HotplugID(e.dev.Slot))
		case e.state == BlockDetaching:
			return fmt.Sprintf("disk %s is being detached (%s)", e.dev.Name, hypervisor.HotplugID(e.dev.Slot))
		}
		if d, ok := h.wanted(e.dev.Slot); (!ok || d != e.dev) && e.state == BlockAttached && e.retryAt.IsZero() {
			return fmt.Sprintf("disk %s is to be detached (%s)", e.dev.Name, hypervisor.HotplugID(e.dev.Slot))
		}
	}
	for _, d := range h.desired {
		if _, ok := h.entries[d.Slot]; !ok {
			return fmt.Sprintf("disk %s is to be attached (%s)", d.Name, hypervisor.HotplugID(d.Slot))
		}
	}
	return ""
}

// layout is what a migration target must be started with: the disks QEMU has. Call with
// launcher.mu held.
func (h *hotplug) layout() []MigrationBlockDevice {
	var out []MigrationBlockDevice
	if h == nil {
		return out
	}
	for _, e := range h.entries {
		if e.state == BlockAttached || e.state == BlockDetaching {
			out = append(out, MigrationBlockDevice{Slot: e.dev.Slot, Path: e.dev.Path})
		}
	}
	slices.SortFunc(out, func(a, b MigrationBlockDevice) int { return a.Slot - b.Slot })
	return out
}

// MigrationBlockDevice is a hot-plugged disk a migration target was started with
// (MigrationRequest.BlockDevices).
type MigrationBlockDevice struct {
	Slot int    `json:"slot"`
	Path string `json:"path"`
}

// sameLayout compares a target's hot-plugged disks with the source's.
func sameLayout(target, source []MigrationBlockDevice) bool {
	t := slices.Clone(target)
	slices.SortFunc(t, func(a, b MigrationBlockDevice) int { return a.Slot - b.Slot })
	return slices.Equal(t, source)
}

func describeLayout(l []MigrationBlockDevice) string {
	if len(l) == 0 {
		return "none"
	}
	var parts []string
	for _, d := range l {
		parts = append(parts, fmt.Sprintf("%s=%s", hypervisor.HotplugID(d.Slot), d.Path))
	}
	return strings.Join(parts, ", ")
}

// hotplugBlocked says why no disk may be attached or detached now ("" when they may): the
// VM is stopping, migrating out, or waiting for its incoming migration. Call with
// launcher.mu held.
func (l *launcher) hotplugBlocked() string {
	switch {
	case l.stopping:
		return "the VM is stopping"
	case l.mig != nil && (l.migStatus == nil || !l.migStatus.Finished()):
		return "a migration to " + l.mig.uri + " is running"
	case l.migStatus != nil && l.migStatus.Status == "completed":
		return "the VM has migrated away"
	case l.incomingURI != "" && !l.migratedIn:
		return "the VM waits for its incoming migration"
	}
	return ""
}

// handleBlockDevices serves PUT /blockdevices.
func (l *launcher) handleBlockDevices(w http.ResponseWriter, r *http.Request) {
	var req BlockDevicesRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 256<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad block device request: "+err.Error())
		return
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "bad block device request: trailing data after the JSON object")
		return
	}
	l.mu.Lock()
	h := l.hp
	root := ""
	if h != nil {
		root = h.root
	}
	l.mu.Unlock()
	if err := validateBlockDevices(req.Devices, root); err != nil {
		writeError(w, http.StatusBadRequest, "bad block device request: "+err.Error())
		return
	}
	if h == nil {
		writeError(w, http.StatusConflict, "this VM does not hot-plug disks")
		return
	}
	l.mu.Lock()
	if why := l.hotplugBlocked(); why != "" {
		l.mu.Unlock()
		writeError(w, http.StatusConflict, "disks cannot be attached or detached now: "+why)
		return
	}
	changed := !slices.Equal(h.desired, req.Devices)
	h.desired = slices.Clone(req.Devices)
	// A disk QEMU refused is tried again on a new request.
	for slot, e := range h.entries {
		if e.state == BlockFailed {
			delete(h.entries, slot)
			changed = true
		}
	}
	l.mu.Unlock()
	if changed {
		l.log.printf("hot-plugged disks asked for: %s", describeDevices(req.Devices))
		if h.startWorker != nil {
			h.startWorker()
		}
	}
	h.kick()
	writeJSON(w, http.StatusAccepted, map[string]bool{"accepted": true})
}

func describeDevices(devs []BlockDevice) string {
	if len(devs) == 0 {
		return "none"
	}
	var parts []string
	for _, d := range devs {
		parts = append(parts, fmt.Sprintf("%s (%s, %s)", d.Name, hypervisor.HotplugID(d.Slot), d.Path))
	}
	return strings.Join(parts, ", ")
}

// hotplugVM is what the hot-plug worker needs of the VM.
type hotplugVM interface {
	AttachDisk(ctx context.Context, d hypervisor.HotplugDisk) error
	DetachDisk(ctx context.Context, slot int) error
}

// runHotplug brings the VM's hot-plugged disks to the desired set, one device at a time,
// until ctx ends.
func (l *launcher) runHotplug(ctx context.Context) {
	h := l.hp
	v, ok := l.vm.(hotplugVM)
	if h == nil || !ok {
		return
	}
	for {
		next := l.hotplugStep(ctx, h, v)
		if next < 0 {
			continue // did something: look again at once
		}
		t := time.NewTimer(max(next, time.Millisecond))
		if next == 0 {
			t.Stop()
		}
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-l.vm.Done():
			t.Stop()
			return
		case <-h.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// hotplugStep attaches or detaches one disk. It returns -1 when it did, else how long to
// wait before looking again (0: until woken).
func (l *launcher) hotplugStep(ctx context.Context, h *hotplug, v hotplugVM) time.Duration {
	now := time.Now()
	l.mu.Lock()
	if l.hotplugBlocked() != "" || h.busy {
		l.mu.Unlock()
		return 0
	}
	var detach, attach *blockEntry
	var wait time.Duration
	slots := make([]int, 0, len(h.entries))
	for s := range h.entries {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	for _, s := range slots {
		e := h.entries[s]
		d, ok := h.wanted(s)
		if ok && d == e.dev {
			continue
		}
		switch e.state {
		case BlockFailed:
			delete(h.entries, s) // never in QEMU
		case BlockAttached:
			if !e.retryAt.IsZero() && now.Before(e.retryAt) {
				if w := e.retryAt.Sub(now); wait == 0 || w < wait {
					wait = w
				}
				continue
			}
			if detach == nil {
				detach = e
			}
		}
	}
	if detach == nil {
		for _, d := range h.desired {
			if _, ok := h.entries[d.Slot]; !ok {
				attach = &blockEntry{dev: d, state: BlockAttaching}
				h.entries[d.Slot] = attach
				break
			}
		}
	}
	if detach == nil && attach == nil {
		l.mu.Unlock()
		return wait
	}
	h.busy = true
	if detach != nil {
		detach.state = BlockDetaching
	}
	l.mu.Unlock()

	if attach != nil {
		var err error
		if h.checkFiles {
			err = resolveUnder(h.root, attach.dev.Path)
		}
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err = v.AttachDisk(actx, attach.dev.disk())
			cancel()
		}
		l.mu.Lock()
		h.busy = false
		if err != nil {
			attach.state, attach.err = BlockFailed, err.Error()
			l.log.printf("hot-plug of disk %s (%s) failed: %v", attach.dev.Name, attach.dev.Path, err)
		} else {
			attach.state = BlockAttached
			l.log.printf("hot-plugged disk %s (%s at PCI %s, %s)", attach.dev.Name, hypervisor.HotplugID(attach.dev.Slot),
				hypervisor.HotplugAddress(attach.dev.Slot), attach.dev.Path)
		}
		l.mu.Unlock()
		return -1
	}
	dctx, cancel := context.WithTimeout(ctx, detachTimeout)
	err := v.DetachDisk(dctx, detach.dev.Slot)
	cancel()
	l.mu.Lock()
	h.busy = false
	if err != nil {
		detach.state, detach.err = BlockAttached, err.Error()
		detach.retryAt = time.Now().Add(detachRetry)
		if errors.Is(err, hypervisor.ErrUnplugPending) {
			detach.err = fmt.Sprintf("the guest has not released the device within %v; asked again every %v", detachTimeout, detachRetry)
		}
		l.log.printf("hot-unplug of disk %s (%s): %s", detach.dev.Name, hypervisor.HotplugID(detach.dev.Slot), detach.err)
	} else {
		delete(h.entries, detach.dev.Slot)
		l.log.printf("hot-unplugged disk %s (%s, %s)", detach.dev.Name, hypervisor.HotplugID(detach.dev.Slot), detach.dev.Path)
	}
	l.mu.Unlock()
	return -1
}

// SetBlockDevices asks the launcher serving runDir to have exactly devs hot-plugged. It
// returns once the request was accepted; follow it with StatusOf (Status.BlockDevices).
func SetBlockDevices(ctx context.Context, runDir string, devs []BlockDevice) error {
	if devs == nil {
		devs = []BlockDevice{}
	}
	body, err := json.Marshal(BlockDevicesRequest{Devices: devs})
	if err != nil {
		return err
	}
	return callBody(ctx, runDir, http.MethodPut, "/blockdevices", body, http.StatusAccepted, nil)
}
