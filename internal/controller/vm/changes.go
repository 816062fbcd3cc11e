package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// appliedSpec is the part of a VM's spec that a launcher pod is built from and that a
// running VM cannot change: the pod records it (v1alpha2.AnnotationAppliedSpec) and the
// controller compares it with the VM's spec to tell what awaits a restart. What applies
// to a running VM at once (runPolicy, liveMigrationPolicy, disruptions) or by a live
// migration (nodeSelector, affinity, tolerations) is not in it.
type appliedSpec struct {
	VirtualMachineClassName       string                              `json:"virtualMachineClassName,omitempty"`
	CPU                           v1alpha2.CPUSpec                    `json:"cpu"`
	Memory                        v1alpha2.MemorySpec                 `json:"memory"`
	BlockDeviceRefs               []v1alpha2.BlockDeviceRef           `json:"blockDeviceRefs,omitempty"`
	OSType                        v1alpha2.OSType                     `json:"osType,omitempty"`
	Bootloader                    v1alpha2.Bootloader                 `json:"bootloader,omitempty"`
	EnableParavirtualization      bool                                `json:"enableParavirtualization"`
	TerminationGracePeriodSeconds int64                               `json:"terminationGracePeriodSeconds"`
	PriorityClassName             string                              `json:"priorityClassName,omitempty"`
	TopologySpreadConstraints     []v1alpha2.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`
	// Provisioning is the provisioning's type and a digest of it: its user-data may hold
	// secrets, which a pod's annotations are no place for.
	Provisioning *provisioningRecord `json:"provisioning,omitempty"`
	// provisioning is the spec's own, for the change list (the VM's status shows it as
	// its spec does); not recorded.
	provisioning *v1alpha2.Provisioning
	// Placement is a digest of the nodeSelector, affinity and tolerations the pod was built
	// with. They apply live, by a migration (keepPlacement), and only once they changed: a
	// VM is not moved for a node that stopped fitting a placement nobody edited.
	Placement string `json:"placement,omitempty"`
}

// placementDigest identifies a VM's placement.
func placementDigest(vm *v1alpha2.VirtualMachine) string {
	b, _ := json.Marshal([]any{vm.Spec.NodeSelector, vm.Spec.Affinity, vm.Spec.Tolerations})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// provisioningRecord identifies a provisioning without holding its data.
type provisioningRecord struct {
	Type   v1alpha2.ProvisioningType `json:"type"`
	Digest string                    `json:"digest"`
}

func recordOf(p *v1alpha2.Provisioning) *provisioningRecord {
	if p == nil {
		return nil
	}
	b, _ := json.Marshal(p)
	sum := sha256.Sum256(b)
	return &provisioningRecord{Type: p.Type, Digest: hex.EncodeToString(sum[:])}
}

// appliedSpecOf is what a pod built now for vm runs, its defaults filled in.
func appliedSpecOf(vm *v1alpha2.VirtualMachine) appliedSpec {
	s := appliedSpec{
		VirtualMachineClassName:       vm.Spec.VirtualMachineClassName,
		CPU:                           vm.Spec.CPU,
		Memory:                        *vm.Spec.Memory.DeepCopy(),
		OSType:                        vm.Spec.OSType,
		Bootloader:                    vm.Spec.Bootloader,
		EnableParavirtualization:      vm.Spec.ParavirtualizationEnabled(),
		TerminationGracePeriodSeconds: ptr.Deref(vm.Spec.TerminationGracePeriodSeconds, 60),
		PriorityClassName:             vm.Spec.PriorityClassName,
		Provisioning:                  recordOf(vm.Spec.Provisioning),
		provisioning:                  vm.Spec.Provisioning.DeepCopy(),
		Placement:                     placementDigest(vm),
	}
	for _, r := range vm.Spec.BlockDeviceRefs {
		s.BlockDeviceRefs = append(s.BlockDeviceRefs, *r.DeepCopy())
	}
	for _, c := range vm.Spec.TopologySpreadConstraints {
		s.TopologySpreadConstraints = append(s.TopologySpreadConstraints, *c.DeepCopy())
	}
	if s.CPU.CoreFraction == "" {
		s.CPU.CoreFraction = "100%"
	}
	if s.OSType == "" {
		s.OSType = v1alpha2.OSGeneric
	}
	if s.Bootloader == "" {
		s.Bootloader = v1alpha2.BootBIOS
	}
	return s
}

func (s appliedSpec) encode() string {
	b, _ := json.Marshal(s)
	return string(b)
}

// normalized is s as a pod's annotation gives it back: compared with what a pod recorded,
// a spec differs only in what JSON keeps (an empty list and none are one), so a VM never
// waits for a restart, nor restarts over and over, for a difference no pod can show.
func (s appliedSpec) normalized() appliedSpec {
	var out appliedSpec
	if err := json.Unmarshal([]byte(s.encode()), &out); err != nil {
		return s
	}
	out.provisioning = s.provisioning
	return out
}

// sameJSON tells whether a and b encode alike.
func sameJSON(a, b any) bool {
	ja, erra := json.Marshal(a)
	jb, errb := json.Marshal(b)
	return erra == nil && errb == nil && string(ja) == string(jb)
}

// podAppliedSpec is the spec pod was built from; ok is false for a pod without one (made
// by a controller before it was recorded), whose pending changes are unknown.
func podAppliedSpec(pod *corev1.Pod) (appliedSpec, bool) {
	var s appliedSpec
	raw, ok := pod.Annotations[v1alpha2.AnnotationAppliedSpec]
	if !ok {
		return s, false
	}
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return s, false
	}
	return s, true
}

// fieldChange is one change of the spec, as Deckhouse lists it in
// status.restartAwaitingChanges.
type fieldChange struct {
	Operation    string `json:"operation"`
	Path         string `json:"path"`
	CurrentValue any    `json:"currentValue,omitempty"`
	DesiredValue any    `json:"desiredValue,omitempty"`
}

const (
	opAdd     = "add"
	opRemove  = "remove"
	opReplace = "replace"
)

// restartChanges are the changes from what a pod runs (cur) to the VM's spec (want) that
// the VM takes only by a restart, in Deckhouse's order and shape: a changed value is
// replaced, a value that appears is added, one that goes is removed; cpu.cores and
// cpu.coreFraction changed together are one replace of cpu; block devices are compared
// position by position.
func restartChanges(cur, want appliedSpec) []fieldChange {
	var out []fieldChange
	cur, want = cur.normalized(), want.normalized()
	value := func(path string, c, d any, empty func(any) bool) {
		if sameJSON(c, d) {
			return
		}
		switch {
		case empty(c):
			out = append(out, fieldChange{Operation: opAdd, Path: path, DesiredValue: d})
		case empty(d):
			out = append(out, fieldChange{Operation: opRemove, Path: path, CurrentValue: c})
		default:
			out = append(out, fieldChange{Operation: opReplace, Path: path, CurrentValue: c, DesiredValue: d})
		}
	}
	zero := func(v any) bool {
		rv := reflect.ValueOf(v)
		return !rv.IsValid() || rv.IsZero() || (rv.Kind() == reflect.Slice && rv.Len() == 0)
	}
	never := func(any) bool { return false }

	value("virtualMachineClassName", cur.VirtualMachineClassName, want.VirtualMachineClassName, zero)
	value("topologySpreadConstraints", cur.TopologySpreadConstraints, want.TopologySpreadConstraints, zero)
	value("priorityClassName", cur.PriorityClassName, want.PriorityClassName, zero)
	value("terminationGracePeriodSeconds", cur.TerminationGracePeriodSeconds, want.TerminationGracePeriodSeconds, never)
	value("enableParavirtualization", cur.EnableParavirtualization, want.EnableParavirtualization, never)
	value("osType", cur.OSType, want.OSType, never)
	value("bootloader", cur.Bootloader, want.Bootloader, never)
	coresChanged := cur.CPU.Cores != want.CPU.Cores
	fractionChanged := cur.CPU.CoreFraction != want.CPU.CoreFraction
	switch {
	case coresChanged && fractionChanged:
		out = append(out, fieldChange{Operation: opReplace, Path: "cpu", CurrentValue: cur.CPU, DesiredValue: want.CPU})
	case coresChanged:
		value("cpu.cores", cur.CPU.Cores, want.CPU.Cores, never)
	case fractionChanged:
		value("cpu.coreFraction", cur.CPU.CoreFraction, want.CPU.CoreFraction, never)
	}
	if cur.Memory.Size.Cmp(want.Memory.Size) != 0 {
		out = append(out, fieldChange{Operation: opReplace, Path: "memory.size", CurrentValue: cur.Memory.Size.String(), DesiredValue: want.Memory.Size.String()})
	}
	for i := 0; i < max(len(cur.BlockDeviceRefs), len(want.BlockDeviceRefs)); i++ {
		var c, d any
		if i < len(cur.BlockDeviceRefs) {
			c = cur.BlockDeviceRefs[i]
		}
		if i < len(want.BlockDeviceRefs) {
			d = want.BlockDeviceRefs[i]
		}
		value(fmt.Sprintf("blockDeviceRefs.%d", i), c, d, func(v any) bool { return v == nil })
	}
	out = append(out, provisioningChanges(cur.Provisioning, want.Provisioning, want.provisioning)...)
	return out
}

// provisioningChanges: a new or changed provisioning is used at the next start; removing
// cloud-init data needs no restart (the guest read it at its boot), as in Deckhouse. The
// pod records only a digest of what it was given: a change shows the type it had and the
// provisioning the spec has now.
func provisioningChanges(cur, want *provisioningRecord, spec *v1alpha2.Provisioning) []fieldChange {
	switch {
	case sameJSON(cur, want):
		return nil
	case cur == nil:
		return []fieldChange{{Operation: opAdd, Path: "provisioning", DesiredValue: spec}}
	case want == nil:
		if cur.Type == v1alpha2.ProvisioningUserData || cur.Type == v1alpha2.ProvisioningUserDataRef {
			return nil
		}
		return []fieldChange{{Operation: opRemove, Path: "provisioning", CurrentValue: map[string]any{"type": cur.Type}}}
	}
	return []fieldChange{{Operation: opReplace, Path: "provisioning", CurrentValue: map[string]any{"type": cur.Type}, DesiredValue: spec}}
}

// rawChanges renders changes for status.restartAwaitingChanges.
func rawChanges(changes []fieldChange) []runtime.RawExtension {
	var out []runtime.RawExtension
	for _, c := range changes {
		b, err := json.Marshal(c)
		if err != nil {
			continue
		}
		out = append(out, runtime.RawExtension{Raw: b})
	}
	return out
}

// changePaths are the changed fields' paths, for messages.
func changePaths(changes []fieldChange) string {
	paths := make([]string, len(changes))
	for i, c := range changes {
		paths[i] = c.Path
	}
	return strings.Join(paths, ", ")
}

// addressChanges: a running VM keeps the address and MAC it runs with (ensureAddress,
// ensureMAC); a vmip (or vmmac) named in its spec other than the one it holds, or another
// address in Ferry's older spec.virtualMachineIPAddress, is taken at its next start.
// Compared with the VM's status, not with what its pod recorded: the address is the
// vmip's, not the pod's.
func addressChanges(vm *v1alpha2.VirtualMachine) []fieldChange {
	held, ip := vm.Status.VirtualMachineIPAddressName, vm.Status.IPAddress
	var out []fieldChange
	if want := vm.Spec.VirtualMachineIPAddressName; want != "" && held != "" && want != held {
		out = append(out, fieldChange{Operation: opReplace, Path: "virtualMachineIPAddressName", CurrentValue: held, DesiredValue: want})
	}
	if want := vm.Spec.VirtualMachineIPAddress; want != "" && ip != "" && want != ip {
		out = append(out, fieldChange{Operation: opReplace, Path: "virtualMachineIPAddress", CurrentValue: ip, DesiredValue: want})
	}
	// The same for the main interface's VirtualMachineMACAddress (ensureMAC).
	if st := vm.MainNetworkStatus(); st != nil && st.VirtualMachineMACAddressName != "" {
		if want := vm.MainMACAddressName(); want != "" && want != st.VirtualMachineMACAddressName {
			out = append(out, fieldChange{Operation: opReplace, Path: "networks", CurrentValue: st.VirtualMachineMACAddressName, DesiredValue: want})
		}
	}
	return out
}
