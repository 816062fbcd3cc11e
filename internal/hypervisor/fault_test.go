package hypervisor

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestFaultOfEvents(t *testing.T) {
	for _, c := range []struct {
		name, event, data string
		reason, msg       string
	}{
		{"panic", "GUEST_PANICKED", `{"action":"pause"}`, FaultPanicked, "action pause"},
		{"panic without data", "GUEST_PANICKED", ``, FaultPanicked, "panicked"},
		{"io error that stopped the guest", "BLOCK_IO_ERROR", `{"device":"disk0","operation":"write","action":"stop","nospace":true,"reason":"No space left on device"}`, FaultIOError, "no space left"},
		{"io error reported to the guest", "BLOCK_IO_ERROR", `{"device":"disk0","operation":"read","action":"report"}`, "", ""},
		{"stop", "STOP", ``, "", ""},
		{"shutdown", "SHUTDOWN", `{"guest":true,"reason":"guest-shutdown"}`, "", ""},
	} {
		f := faultOf(Event{Name: c.event, Data: json.RawMessage(c.data)})
		switch {
		case c.reason == "" && f != nil:
			t.Errorf("%s: fault %+v, want none", c.name, f)
		case c.reason != "" && (f == nil || f.Reason != c.reason || !strings.Contains(f.Message, c.msg)):
			t.Errorf("%s: fault %+v, want %s mentioning %q", c.name, f, c.reason, c.msg)
		}
	}
}

// Every VM gets the devices that let the platform see it without reading its console: a
// pvpanic device with the guest kept paused on panic, the guest agent's channel, and disks
// that stop the guest on a write error instead of failing its I/O.
func TestArgsCarryTheGuestsSignals(t *testing.T) {
	args := strings.Join(buildArgs(Config{RunDir: "/run/vm", Disks: []Disk{{Path: "/d/root.qcow2", Format: "qcow2"}, {Path: "/d/img.raw", Format: "raw", ReadOnly: true}}}, "tcg"), " ")
	for _, want := range []string{
		"-device pvpanic", "-action panic=pause",
		"virtio-serial-pci", "path=/run/vm/qga.sock", "name=org.qemu.guest_agent.0",
		"file=/d/root.qcow2,format=qcow2,file.locking=on,cache=writeback,werror=stop,rerror=stop",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU arguments lack %q:\n%s", want, args)
		}
	}
	if strings.Contains(args, "img.raw,format=raw,file.locking=on,cache=writeback,readonly=on,werror") {
		t.Errorf("a read-only disk got a write error policy: %s", args)
	}
}

// TestTCGCacheCapped: under TCG, QEMU's translation cache is capped (its default of 1 GiB
// would outgrow a launcher pod's memory limit); KVM has none.
func TestTCGCacheCapped(t *testing.T) {
	for accel, want := range map[string]string{"tcg": "-accel tcg,tb-size=128 ", "kvm": "-accel kvm "} {
		if args := strings.Join(buildArgs(Config{RunDir: "/run/vm"}, accel), " "); !strings.Contains(args, want) {
			t.Errorf("%s: %s, want %q in it", accel, args, want)
		}
	}
}
