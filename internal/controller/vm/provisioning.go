package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/nocloud"
)

// seedDir is where a VM's seed images live on the shared storage, beside images/ and
// disks/: every node reaches them at the same path, so a migration target opens the
// source's very file.
func (r *Reconciler) seedDir(vm *v1alpha2.VirtualMachine) string {
	return filepath.Join(r.Node.StorageDir, "provisioning", vm.Namespace)
}

// seedPath names a seed by the VM's UID and the hash of its content: a changed
// provisioning gets a new file, and a file a running QEMU reads is never rewritten.
func (r *Reconciler) seedPath(vm *v1alpha2.VirtualMachine, hash string) string {
	return filepath.Join(r.seedDir(vm), string(vm.UID)+"-"+hash+".iso")
}

// ensureProvisioning resolves the VM's provisioning data, builds its seed image on the
// shared storage and attaches it as the VM's last disk, a CD-ROM. A problem the user must
// fix (a missing Secret or key) is recorded in s, not returned: the VM waits for the fix,
// and the Secret's watch wakes it.
func (r *Reconciler) ensureProvisioning(ctx context.Context, s *scope) error {
	vm := s.vm
	if vm.Spec.Provisioning == nil {
		s.provReady = true
		return nil
	}
	label, files, problem, err := r.provisioningFiles(ctx, vm)
	if err != nil {
		return err
	}
	if problem != "" {
		s.provProblem(problem)
		if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionProvisioningReady); c == nil || c.Message != problem {
			r.Recorder.Event(vm, corev1.EventTypeWarning, v1alpha2.ReasonProvisioningNotReady, problem)
		}
		return nil
	}
	if r.Node.StorageDir == "" {
		s.provProblem("the controller has no shared storage to put the provisioning seed on (controller flag --storage-dir)")
		return nil
	}
	path := r.seedPath(vm, nocloud.Hash(label, files))
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("making the seed directory: %w", err)
		}
		if err := nocloud.WriteISO(path, label, files); err != nil {
			return fmt.Errorf("writing the provisioning seed of VM %s: %w", vm.Name, err)
		}
		r.Recorder.Eventf(vm, corev1.EventTypeNormal, "ProvisioningSeedBuilt", "Built the %s seed %s", vm.Spec.Provisioning.Type, filepath.Base(path))
		ctrl.LoggerFrom(ctx).Info("Built provisioning seed", "path", path)
	} else if err != nil {
		return err
	}
	s.disks = append(s.disks, attachedDisk{Path: path, Format: "raw", CDROM: true})
	s.provReady = true
	s.provMessage = fmt.Sprintf("%s seed %s is attached as a CD-ROM", vm.Spec.Provisioning.Type, filepath.Base(path))
	return r.pruneSeeds(s, path)
}

func (s *scope) provProblem(msg string) {
	s.provReady = false
	s.provMessage = msg
}

// provisioningFiles reads the VM's provisioning data into the files of its seed image. A
// problem the user must fix comes back as problem, with what to do.
func (r *Reconciler) provisioningFiles(ctx context.Context, vm *v1alpha2.VirtualMachine) (label string, files []nocloud.File, problem string, err error) {
	p := vm.Spec.Provisioning
	var userData []byte
	switch p.Type {
	case v1alpha2.ProvisioningUserData:
		if strings.TrimSpace(p.UserData) == "" {
			return "", nil, "spec.provisioning.userData is empty: give the cloud-init user-data (for example a #cloud-config document)", nil
		}
		userData = []byte(p.UserData)
	case v1alpha2.ProvisioningUserDataRef:
		if p.UserDataRef == nil {
			return "", nil, "spec.provisioning.userDataRef is missing: name the Secret with the key userData", nil
		}
		sec, problem, err := r.provisioningSecret(ctx, vm.Namespace, p.UserDataRef.Name, "the key "+v1alpha2.UserDataKey)
		if problem != "" || err != nil {
			return "", nil, problem, err
		}
		data, ok := sec.Data[v1alpha2.UserDataKey]
		switch {
		case !ok:
			return "", nil, fmt.Sprintf("Secret %q has no key %q: put the cloud-init user-data under that key", sec.Name, v1alpha2.UserDataKey), nil
		case len(strings.TrimSpace(string(data))) == 0:
			return "", nil, fmt.Sprintf("Secret %q key %q is empty: put the cloud-init user-data there", sec.Name, v1alpha2.UserDataKey), nil
		}
		userData = data
	case v1alpha2.ProvisioningSysprepRef:
		if p.SysprepRef == nil {
			return "", nil, "spec.provisioning.sysprepRef is missing: name the Secret with autounattend.xml or unattend.xml", nil
		}
		sec, problem, err := r.provisioningSecret(ctx, vm.Namespace, p.SysprepRef.Name, "autounattend.xml or unattend.xml")
		if problem != "" || err != nil {
			return "", nil, problem, err
		}
		files, err := nocloud.SysprepFiles(sec.Data)
		if err != nil {
			return "", nil, fmt.Sprintf("Secret %q: %v", sec.Name, err), nil
		}
		return nocloud.LabelSysprep, files, "", nil
	default:
		return "", nil, fmt.Sprintf("spec.provisioning.type %q: use UserData, UserDataRef or SysprepRef", p.Type), nil
	}

	seed := nocloud.Seed{InstanceID: string(vm.UID), Hostname: vm.Name, UserData: userData}
	if r.Network {
		st := vm.MainNetworkStatus()
		if st == nil || st.MACAddress == "" {
			return "", nil, "waiting for the VM's MAC address: the seed's network-config names the NIC by it", nil
		}
		mac, err := net.ParseMAC(st.MACAddress)
		if err != nil {
			return "", nil, fmt.Sprintf("the VM's MAC address %q: %v", st.MACAddress, err), nil
		}
		seed.MAC = mac
	}
	files, err = seed.Files()
	if err != nil {
		return "", nil, "", fmt.Errorf("rendering the NoCloud seed: %w", err)
	}
	return nocloud.LabelNoCloud, files, "", nil
}

// provisioningSecret reads one Secret straight from the API server: the controller watches
// only Secrets' metadata and caches no Secret's data.
func (r *Reconciler) provisioningSecret(ctx context.Context, ns, name, holds string) (*corev1.Secret, string, error) {
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	sec := &corev1.Secret{}
	if err := reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Sprintf("Secret %q not found in namespace %s: create it with %s", name, ns, holds), nil
		}
		return nil, "", fmt.Errorf("reading Secret %s/%s: %w", ns, name, err)
	}
	return sec, "", nil
}

// pruneSeeds removes the VM's seeds that neither the current one nor any of its pods uses
// (the provisioning changed since they were built). A seed a pod names stays: that pod's
// QEMU, or a migration target copied from it, may read it.
func (r *Reconciler) pruneSeeds(s *scope, current string) error {
	old, err := filepath.Glob(filepath.Join(r.seedDir(s.vm), string(s.vm.UID)+"-*.iso"))
	if err != nil || len(old) <= 1 {
		return err
	}
	pods := append(append(append(append([]*corev1.Pod{s.active}, s.extraActive...), s.targets...), s.terminating...), s.ended...)
	for _, p := range old {
		if p == current || podsName(pods, p) {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing an old provisioning seed: %w", err)
		}
	}
	return nil
}

// podsName tells whether a pod's launcher is given the file at path as a disk.
func podsName(pods []*corev1.Pod, path string) bool {
	for _, pod := range pods {
		if pod == nil {
			continue
		}
		for _, c := range pod.Spec.Containers {
			for _, a := range c.Args {
				if a == path || strings.HasPrefix(a, path+":") {
					return true
				}
			}
		}
	}
	return false
}

// removeSeeds removes all of the VM's seeds; the VM's pods are gone.
func (r *Reconciler) removeSeeds(vm *v1alpha2.VirtualMachine) error {
	if r.Node.StorageDir == "" {
		return nil
	}
	seeds, err := filepath.Glob(filepath.Join(r.seedDir(vm), string(vm.UID)+"-*.iso"))
	if err != nil {
		return err
	}
	for _, p := range seeds {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing provisioning seed: %w", err)
		}
	}
	return nil
}

// deriveProvisioning sets ProvisioningReady from what ensureProvisioning found; a VM
// without provisioning has no such condition.
func (r *Reconciler) deriveProvisioning(s *scope) {
	conds := &s.vm.Status.Conditions
	if s.vm.Spec.Provisioning == nil {
		meta.RemoveStatusCondition(conds, v1alpha2.VMConditionProvisioningReady)
		return
	}
	if s.provMessage == "" {
		return // the reconcile stopped before it looked
	}
	c := metav1.Condition{Type: v1alpha2.VMConditionProvisioningReady, Status: metav1.ConditionTrue,
		Reason: v1alpha2.ReasonProvisioningReady, Message: s.provMessage, ObservedGeneration: s.vm.Generation}
	if !s.provReady {
		c.Status, c.Reason = metav1.ConditionFalse, v1alpha2.ReasonProvisioningNotReady
	}
	meta.SetStatusCondition(conds, c)
}

// vmsOfSecret wakes the VMs whose provisioning names a Secret when it appears or changes.
func (r *Reconciler) vmsOfSecret(ctx context.Context, obj client.Object) []reconcile.Request {
	var vms v1alpha2.VirtualMachineList
	if err := r.Client.List(ctx, &vms, client.InNamespace(obj.GetNamespace()), client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range vms.Items {
		p := vms.Items[i].Spec.Provisioning
		if p == nil {
			continue
		}
		if (p.UserDataRef != nil && p.UserDataRef.Name == obj.GetName()) || (p.SysprepRef != nil && p.SysprepRef.Name == obj.GetName()) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&vms.Items[i])})
		}
	}
	return out
}
