package launcherpod

// A launcher pod's hot-plugged disks: the launcher flags that start a VM with them, the
// set the VM controller asks for (v1alpha2.AnnotationHotplug) and what the node agent
// reports its launcher has (v1alpha2.AnnotationHotplugStatus).

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// Launcher flags of hot-plugged disks (internal/launcher, Options.HotplugDisks and
// HotplugRoot).
const (
	FlagHotplugDisk = "--hotplug-disk"
	FlagHotplugRoot = "--hotplug-root"
)

// HotplugDiskArg renders d as the value of --hotplug-disk: SLOT,NAME,PATH:FORMAT[:ro].
func HotplugDiskArg(d v1alpha2.HotplugDevice) string {
	arg := strconv.Itoa(d.Slot) + "," + d.Name + "," + d.Path + ":" + d.Format
	if d.ReadOnly {
		arg += ":ro"
	}
	return arg
}

// parseHotplugDiskArg reads what HotplugDiskArg wrote.
func parseHotplugDiskArg(s string) (v1alpha2.HotplugDevice, error) {
	parts := strings.SplitN(s, ",", 3)
	if len(parts) != 3 {
		return v1alpha2.HotplugDevice{}, fmt.Errorf("hot-plugged disk %q: want SLOT,NAME,PATH:FORMAT[:ro]", s)
	}
	slot, err := strconv.Atoi(parts[0])
	if err != nil {
		return v1alpha2.HotplugDevice{}, fmt.Errorf("hot-plugged disk %q: %w", s, err)
	}
	d := v1alpha2.HotplugDevice{Slot: slot, Name: parts[1]}
	spec := parts[2]
	if rest, ok := strings.CutSuffix(spec, ":ro"); ok {
		spec, d.ReadOnly = rest, true
	}
	i := strings.LastIndexByte(spec, ':')
	if i <= 0 {
		return v1alpha2.HotplugDevice{}, fmt.Errorf("hot-plugged disk %q: no format", s)
	}
	d.Path, d.Format = spec[:i], spec[i+1:]
	return d, nil
}

// HotplugDisksOf reads the hot-plugged disks a launcher container starts with from its
// arguments.
func HotplugDisksOf(args []string) []v1alpha2.HotplugDevice {
	var out []v1alpha2.HotplugDevice
	for i := 0; i < len(args); i++ {
		v, ok := "", false
		switch {
		case args[i] == FlagHotplugDisk && i+1 < len(args):
			v, ok = args[i+1], true
			i++
		case strings.HasPrefix(args[i], FlagHotplugDisk+"="):
			v, ok = strings.TrimPrefix(args[i], FlagHotplugDisk+"="), true
		}
		if ok {
			if d, err := parseHotplugDiskArg(v); err == nil {
				out = append(out, d)
			}
		}
	}
	return out
}

// WithHotplugDisks replaces the hot-plugged disks in a launcher container's arguments.
func WithHotplugDisks(args []string, disks []v1alpha2.HotplugDevice) []string {
	out := make([]string, 0, len(args)+2*len(disks))
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == FlagHotplugDisk:
			i++
		case strings.HasPrefix(args[i], FlagHotplugDisk+"="):
		default:
			out = append(out, args[i])
		}
	}
	for _, d := range disks {
		out = append(out, FlagHotplugDisk, HotplugDiskArg(d))
	}
	return out
}

// HotplugWanted is the set the VM controller asked the pod's VM to have; ok is false when
// it asked for none yet (a pod made by the migration controller).
func HotplugWanted(p *corev1.Pod) (devs []v1alpha2.HotplugDevice, ok bool) {
	raw, ok := p.Annotations[v1alpha2.AnnotationHotplug]
	if !ok {
		return nil, false
	}
	if err := json.Unmarshal([]byte(raw), &devs); err != nil {
		return nil, false
	}
	return devs, true
}

// HotplugReported is what the node agent last reported of the pod's launcher: its
// hot-plugged disks, by slot (none before its first report). Only this report says a disk
// is attached: the node agent has it from the launcher, which has it from QEMU.
func HotplugReported(p *corev1.Pod) []v1alpha2.HotplugDeviceStatus {
	var out []v1alpha2.HotplugDeviceStatus
	if raw, ok := p.Annotations[v1alpha2.AnnotationHotplugStatus]; ok {
		if json.Unmarshal([]byte(raw), &out) == nil {
			return out
		}
	}
	return nil
}

// HotplugTarget is QEMU's name of the hot-plugged disk at slot (hypervisor.HotplugID).
func HotplugTarget(slot int) string { return fmt.Sprintf("hotplug-%02x", slot) }

// HotplugLayout is the hot-plugged disks the pod's QEMU has, as a migration target must be
// started with them: those reported attached, or being detached (still there), by slot.
func HotplugLayout(p *corev1.Pod) []v1alpha2.HotplugDevice {
	var out []v1alpha2.HotplugDevice
	for _, s := range HotplugReported(p) {
		if s.State == v1alpha2.HotplugAttached || s.State == v1alpha2.HotplugDetaching {
			out = append(out, s.HotplugDevice)
		}
	}
	slices.SortFunc(out, func(a, b v1alpha2.HotplugDevice) int { return a.Slot - b.Slot })
	return out
}

// HotplugUnsettled says why the pod's hot-plugged disks are changing ("" when they are
// not): a disk being attached or detached, asked for and not attached yet, or no longer
// asked for and not detached yet. A disk whose detach the guest did not answer (reported
// attached with an error) does not count: its QEMU keeps it, and a target gets it too. It
// is the launcher's own rule (internal/launcher, hotplug.unsettled), read from the pod.
func HotplugUnsettled(p *corev1.Pod) string {
	if _, ok := p.Annotations[v1alpha2.AnnotationHotplugStatus]; !ok && len(p.Spec.Containers) > 0 && len(HotplugDisksOf(p.Spec.Containers[0].Args)) > 0 {
		return "the node agent has not reported the hot-plugged disks yet"
	}
	reported := HotplugReported(p)
	bySlot := map[int]v1alpha2.HotplugDeviceStatus{}
	for _, s := range reported {
		bySlot[s.Slot] = s
		switch s.State {
		case v1alpha2.HotplugAttaching:
			return fmt.Sprintf("disk %s is being attached", s.Name)
		case v1alpha2.HotplugDetaching:
			return fmt.Sprintf("disk %s is being detached", s.Name)
		}
	}
	wanted, ok := HotplugWanted(p)
	if !ok {
		return ""
	}
	for _, w := range wanted {
		s, there := bySlot[w.Slot]
		if !there || s.HotplugDevice != w {
			return fmt.Sprintf("disk %s is to be attached", w.Name)
		}
	}
	for _, s := range reported {
		if s.State != v1alpha2.HotplugAttached || s.Error != "" {
			continue
		}
		if !slices.Contains(wanted, s.HotplugDevice) {
			return fmt.Sprintf("disk %s is to be detached", s.Name)
		}
	}
	return ""
}
