package vm

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// ReasonPodNotCreated: admission refused the VM's launcher pod (Running condition).
const ReasonPodNotCreated = "PodNotCreated"

// machineArgs are the launcher's arguments for the VM's virtual hardware: osType,
// bootloader (with the VM's EFI variable store on the shared storage) and
// paravirtualization.
func machineArgs(vm *v1alpha2.VirtualMachine, storageDir string) []string {
	os := vm.Spec.OSType
	if os == "" {
		os = v1alpha2.OSGeneric
	}
	boot := vm.Spec.Bootloader
	if boot == "" {
		boot = v1alpha2.BootBIOS
	}
	args := []string{"--os-type", string(os), "--bootloader", string(boot)}
	if boot != v1alpha2.BootBIOS {
		args = append(args, "--efi-vars", efiVarsPath(storageDir, vm))
	}
	if !vm.Spec.ParavirtualizationEnabled() {
		args = append(args, "--paravirtualization=false")
	}
	return args
}

// efiVarsPath is the VM's EFI variable store: on the shared storage, so that a restart on
// another node and a migration's target open the same file; one per VM (its UID) and
// bootloader, since Secure Boot's starts from another template (Microsoft's keys).
func efiVarsPath(storageDir string, vm *v1alpha2.VirtualMachine) string {
	kind := "efi"
	if vm.Spec.Bootloader == v1alpha2.BootEFIWithSecureBoot {
		kind = "secureboot"
	}
	return filepath.Join(storageDir, "firmware", vm.Namespace, string(vm.UID)+"-"+kind+".fd")
}

// removeEFIVars removes the VM's EFI variable stores once the VM is gone.
func (r *Reconciler) removeEFIVars(vm *v1alpha2.VirtualMachine) error {
	if r.Node.StorageDir == "" || vm.UID == "" {
		return nil
	}
	files, err := filepath.Glob(filepath.Join(r.Node.StorageDir, "firmware", vm.Namespace, string(vm.UID)+"-*.fd"))
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// podLabels are a launcher pod's labels: the VM's own, so that Deckhouse's
// virtualMachineAndPodAffinity, topology spread constraints and services select VMs by
// their labels, and Ferry's, which no VM label may change (they command nodes, and a
// tenant's VM labels must not).
func podLabels(vm *v1alpha2.VirtualMachine) map[string]string {
	out := map[string]string{}
	for k, v := range vm.Labels {
		if !ferryLabel(k) {
			out[k] = v
		}
	}
	out[v1alpha2.LabelVMName] = vm.Name
	out[v1alpha2.LabelLauncher] = "virt-launcher"
	return out
}

// ferryLabel tells whether a pod label key is Ferry's (the launcher-pods policy lets only
// Ferry write them).
func ferryLabel(k string) bool {
	return strings.HasPrefix(k, "virtualization.ferryvm.io/") || k == v1alpha2.LabelVMName || k == v1alpha2.LabelLauncher
}

// labelPatch is the change that makes pod's labels other than Ferry's those of vm (nil
// values remove a label), or nil when they already are.
func labelPatch(vm *v1alpha2.VirtualMachine, pod *corev1.Pod) map[string]any {
	want := podLabels(vm)
	patch := map[string]any{}
	for k, v := range want {
		if ferryLabel(k) {
			continue
		}
		if cur, ok := pod.Labels[k]; !ok || cur != v {
			patch[k] = v
		}
	}
	for k := range pod.Labels {
		if _, ok := want[k]; !ok && !ferryLabel(k) {
			patch[k] = nil
		}
	}
	if len(patch) == 0 {
		return nil
	}
	return patch
}

// withBootOrder gives the VM's disks their boot order (spec.blockDeviceRefs[].bootOrder);
// disks holds one file per reference, in the same order.
func withBootOrder(vm *v1alpha2.VirtualMachine, disks []attachedDisk) {
	for i, ref := range vm.Spec.BlockDeviceRefs {
		if i < len(disks) && ref.BootOrder != nil {
			disks[i].BootIndex = *ref.BootOrder
		}
	}
}

// bootSuffix is a disk's ":boot=N" launcher suffix.
func (d attachedDisk) bootSuffix() string {
	if d.BootIndex <= 0 {
		return ""
	}
	return ":boot=" + strconv.Itoa(d.BootIndex)
}
