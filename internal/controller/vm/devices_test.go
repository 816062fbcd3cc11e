package vm

import (
	"strings"
	"testing"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestPassthroughOfUSBDevices: a VM that names USBDevices never starts; its message says,
// for each, whether it is not found in the namespace or exists and is not ready (absent
// on every node), and what to remove.
func TestPassthroughOfUSBDevices(t *testing.T) {
	spec := &v1alpha2.VirtualMachineSpec{USBDevices: []v1alpha2.USBDeviceSpecRef{{Name: "cam"}, {Name: "token"}}}
	for _, c := range []struct {
		what    string
		present map[string]bool
		reason  string
		has     []string
		hasNot  []string
	}{
		{"none exists", nil, v1alpha2.ReasonUSBDeviceNotFound,
			[]string{`USBDevice "cam", "token" not found in namespace p`, "Ferry has no USB passthrough", "remove spec.usbDevices"}, []string{"not ready"}},
		{"one exists", map[string]bool{"cam": true}, v1alpha2.ReasonUSBDeviceNotFound,
			[]string{`USBDevice "token" not found in namespace p`, `USBDevice "cam" is not ready: the device is absent on every node`}, nil},
		{"both exist", map[string]bool{"cam": true, "token": true}, v1alpha2.ReasonUSBDeviceNotReady,
			[]string{`USBDevices "cam", "token" are not ready: the devices are absent on every node`, "remove spec.usbDevices"}, []string{"not found"}},
	} {
		v := passthroughOf("p", spec, c.present)
		if !v.blocked || v.reason != c.reason {
			t.Errorf("%s: blocked %v, reason %s, want %s", c.what, v.blocked, v.reason, c.reason)
		}
		for _, s := range c.has {
			if !strings.Contains(v.message, s) {
				t.Errorf("%s: %q lacks %q", c.what, v.message, s)
			}
		}
		for _, s := range c.hasNot {
			if strings.Contains(v.message, s) {
				t.Errorf("%s: %q says %q", c.what, v.message, s)
			}
		}
	}
	if v := passthroughOf("p", &v1alpha2.VirtualMachineSpec{}, nil); v.blocked {
		t.Errorf("a VM without devices is blocked: %+v", v)
	}
}
