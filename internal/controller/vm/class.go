package vm

import (
	"context"
	"fmt"
	"slices"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/vmclass"
)

// classView is what a reconcile saw of the VM's VirtualMachineClass.
type classView struct {
	class *v1alpha2.VirtualMachineClass // nil: not found
	cpu   vmclass.CPUConfig
	// start: the VM may start, its class exists and gives a CPU. Where its pods may run is
	// the scheduler's to find (the class's nodeSelector is in their placement), so a class
	// that sees no suitable node (Pending) holds no VM back: ready, the condition, says so.
	start, ready bool
	message      string // what the class gives, or why it is not ready
	// sizing is why the VM does not fit the class's sizing policies ("": it fits), with
	// sizingReason.
	sizing, sizingReason string
}

// observeClass reads the VM's class. A VM whose class is missing, or gives no CPU yet (a
// Discovery class before its features are found), does not start (its running instance,
// if any, runs on); VirtualMachineClassReady says why.
func (r *Reconciler) observeClass(ctx context.Context, s *scope) error {
	name := vmclass.ClassName(s.vm)
	c, err := vmclass.Of(ctx, r.Client, s.vm)
	if err != nil {
		return err
	}
	if c == nil {
		msg := fmt.Sprintf("VirtualMachineClass %q not found: create it, or name an existing class in spec.virtualMachineClassName (ferry k get vmclass)", name)
		s.class = classView{message: msg, sizing: msg, sizingReason: v1alpha2.ReasonClassNotFound}
		return nil
	}
	v := classView{class: c}
	switch cpu, err := vmclass.CPUOf(c); {
	case err != nil:
		v.message = err.Error() + "; the VM starts once they are"
	case c.Status.Phase != v1alpha2.ClassPhaseReady:
		v.start, v.cpu = true, cpu
		v.message = fmt.Sprintf("VirtualMachineClass %q is %s", name, orPending(c.Status.Phase))
		if rc := meta.FindStatusCondition(c.Status.Conditions, v1alpha2.ClassConditionReady); rc != nil && rc.Message != "" {
			v.message += ": " + rc.Message
		}
	default:
		v.start, v.ready, v.cpu = true, true, cpu
		v.message = fmt.Sprintf("VirtualMachineClass %q gives the guest CPU %s", name, cpuText(c, cpu))
	}
	if c.Status.Phase == v1alpha2.ClassPhaseTerminating {
		v.sizing, v.sizingReason = fmt.Sprintf("VirtualMachineClass %q is terminating", name), v1alpha2.ReasonClassTerminating
	} else if err := vmclass.Sizing(c, s.vm.Spec.CPU, s.vm.Spec.Memory.Size); err != nil {
		v.sizing, v.sizingReason = err.Error(), v1alpha2.ReasonSizingPolicyNotMatched
	}
	s.class = v
	return nil
}

func orPending(p v1alpha2.VirtualMachineClassPhase) string {
	if p == "" {
		return string(v1alpha2.ClassPhasePending)
	}
	return string(p)
}

// cpuText says what CPU the class gives, in words an operator checks against the QEMU log.
func cpuText(c *v1alpha2.VirtualMachineClass, cpu vmclass.CPUConfig) string {
	switch c.Spec.CPU.Type {
	case v1alpha2.CPUTypeHost, v1alpha2.CPUTypeHostPassthrough:
		return fmt.Sprintf("%s (QEMU -cpu host under KVM; on a node without KVM QEMU's max model, which the launcher logs)", c.Spec.CPU.Type)
	case v1alpha2.CPUTypeModel:
		return cpu.Model
	}
	return fmt.Sprintf("%s with %s", cpu.Model, cpu.Features)
}

// deriveClass sets VirtualMachineClassReady, and SizingPolicyMatched while (and only
// while) it is False, as Deckhouse does.
func deriveClass(s *scope) {
	if s.class.message == "" {
		return // not observed: the reconcile stopped before
	}
	st := &s.vm.Status
	c := metav1.Condition{Type: v1alpha2.VMConditionClassReady, Status: metav1.ConditionFalse, Reason: v1alpha2.ReasonClassNotReady,
		Message: s.class.message, ObservedGeneration: s.vm.Generation}
	if s.class.ready {
		c.Status, c.Reason = metav1.ConditionTrue, v1alpha2.ReasonClassReady
	}
	meta.SetStatusCondition(&st.Conditions, c)
	if s.class.sizing == "" {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha2.VMConditionSizingPolicyMatched)
		return
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha2.VMConditionSizingPolicyMatched, Status: metav1.ConditionFalse,
		Reason: s.class.sizingReason, Message: s.class.sizing, ObservedGeneration: s.vm.Generation})
}

// withClassCPU gives the launcher pod's QEMU the class's CPU (its flags).
func withClassCPU(pod *corev1.Pod, cpu vmclass.CPUConfig) {
	c := &pod.Spec.Containers[0]
	c.Args = append(c.Args, cpu.LauncherArgs()...)
}

// classChanged passes the changes of a class its VMs act on: its spec, phase, discovered
// features, deletion. Not its free resources or InUse, which change as VMs come and go:
// every VM of the class would be reconciled each time.
var classChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	o, n := e.ObjectOld.(*v1alpha2.VirtualMachineClass), e.ObjectNew.(*v1alpha2.VirtualMachineClass)
	return o.Generation != n.Generation || o.Status.Phase != n.Status.Phase ||
		!slices.Equal(o.Status.CPUFeatures.Enabled, n.Status.CPUFeatures.Enabled) ||
		!n.DeletionTimestamp.Equal(o.DeletionTimestamp)
}}

// vmsOfClass wakes the VMs that name a class when it changes.
func (r *Reconciler) vmsOfClass(ctx context.Context, o client.Object) []reconcile.Request {
	var vms v1alpha2.VirtualMachineList
	if err := r.Client.List(ctx, &vms, client.MatchingFields{vmclass.IndexVMsByClass: o.GetName()}); err != nil {
		return nil
	}
	out := make([]reconcile.Request, len(vms.Items))
	for i, vm := range vms.Items {
		out[i] = reconcile.Request{NamespacedName: types.NamespacedName{Namespace: vm.Namespace, Name: vm.Name}}
	}
	return out
}

// classRefusal is why the webhook refuses vm: its class's sizing policies do not allow its
// cores, memory or coreFraction ("": they do, or the VM names no existing class, which is
// accepted: the VM waits for its class, VirtualMachineClassReady False). An update that
// changes none of these nor the class is not checked: a class changed since the VM was
// made is SizingPolicyMatched's to report, and the VM's other fields stay editable.
func (w *Webhook) classRefusal(ctx context.Context, req admission.Request, vm *v1alpha2.VirtualMachine) (string, error) {
	if req.Operation == admissionv1.Update {
		old := &v1alpha2.VirtualMachine{}
		if err := w.Decoder.DecodeRaw(req.OldObject, old); err != nil {
			return "", err
		}
		if vmclass.ClassName(old) == vmclass.ClassName(vm) && old.Spec.CPU == vm.Spec.CPU && old.Spec.Memory.Size.Cmp(vm.Spec.Memory.Size) == 0 {
			return "", nil
		}
	}
	class, err := vmclass.Of(ctx, w.APIReader, vm)
	if err != nil || class == nil {
		return "", err
	}
	if err := vmclass.Sizing(class, vm.Spec.CPU, vm.Spec.Memory.Size); err != nil {
		return err.Error(), nil
	}
	return "", nil
}
