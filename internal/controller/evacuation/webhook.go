package evacuation

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/power"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// WebhookPath is where the eviction webhook is served.
const WebhookPath = "/validate-pods-eviction"

// Webhook answers evictions of launcher pods: a VM that runs in the pod is moved first.
type Webhook struct {
	Client client.Client
	// APIReader reads the VM fresh for the status write (the cache may lag behind).
	APIReader client.Reader
	Backoff   Backoff
	Now       func() time.Time
}

// Handle lets an eviction through unless the pod runs a VM; for a VM it marks the VM for
// evacuation and answers 429 with what happens to the VM, so that kubectl drain prints
// it and retries.
func (w *Webhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	// An answer the apiserver gives up waiting for fails the eviction, and kubectl drain
	// then stops; "retry" (429) keeps it asking. On a loaded cluster, answer that in time.
	ctx, cancel := context.WithTimeout(ctx, answerWithin)
	defer cancel()
	done := make(chan admission.Response, 1)
	go func() { done <- w.handle(ctx, req) }()
	select {
	case r := <-done:
		if ctx.Err() == nil || r.Allowed {
			return r
		}
	case <-ctx.Done():
	}
	ctrl.LoggerFrom(ctx).Info("Eviction answered before its assessment ended: retry", "pod", req.Namespace+"/"+req.Name, "within", answerWithin)
	return tooManyRequests(fmt.Sprintf("Ferry could not assess pod %s/%s within %s (the cluster is busy); retry", req.Namespace, req.Name, answerWithin))
}

// answerWithin is the time the webhook takes at most for an answer, well inside the
// apiserver's timeout for it (10 s or more).
const answerWithin = 5 * time.Second

func (w *Webhook) handle(ctx context.Context, req admission.Request) admission.Response {
	if req.SubResource != "eviction" || req.Operation != admissionv1.Create {
		return admission.Allowed("")
	}
	pod := &corev1.Pod{}
	if err := w.Client.Get(ctx, client.ObjectKey{Namespace: req.Namespace, Name: req.Name}, pod); err != nil {
		// Only launcher pods are cached: any other pod is none of Ferry's business.
		if apierrors.IsNotFound(err) {
			return admission.Allowed("")
		}
		return admission.Errored(http.StatusInternalServerError, err)
	}
	vmName := pod.Labels[v1alpha2.LabelVMName]
	if _, target := pod.Labels[v1alpha2.LabelMigrationTarget]; target || vmName == "" ||
		launcherpod.Ended(pod) || !pod.DeletionTimestamp.IsZero() || pod.Spec.NodeName == "" {
		// A migration target going away only cancels that migration; an ended or
		// unscheduled pod runs no guest.
		return admission.Allowed("")
	}
	vm := &v1alpha2.VirtualMachine{}
	if err := w.Client.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: vmName}, vm); err != nil {
		if apierrors.IsNotFound(err) {
			return admission.Allowed("")
		}
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if ref := metav1.GetControllerOf(pod); ref == nil || ref.UID != vm.UID || !vm.DeletionTimestamp.IsZero() {
		return admission.Allowed("")
	}
	if !isActive(vm, pod.Name) && vm.Status.NodeName != pod.Spec.NodeName {
		return admission.Allowed("") // the VM has already moved; this pod is on its way out
	}
	node := pod.Spec.NodeName
	now := w.now()
	if req.DryRun == nil || !*req.DryRun {
		if err := w.mark(ctx, vm, node); err != nil {
			// 429, not 500: kubectl drain gives up on other errors, and this one passes.
			return tooManyRequests(fmt.Sprintf("VM %s/%s runs in this pod and could not be marked for evacuation yet (%v); retry", vm.Namespace, vm.Name, err))
		}
	}
	// kubectl drain asks again every 5 s for every pod until it is gone: while the VM's
	// migration runs, say so without assessing the cluster (a drain of many nodes sends
	// hundreds of these a second, and a slow answer fails the drain).
	if op, err := w.migrating(ctx, vm); err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	} else if op != nil {
		return tooManyRequests(Explain(vm, node, State{InFlight: op}, now))
	}
	s, err := observeIndexed(ctx, w.Client, vm, w.Backoff)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	ctrl.LoggerFrom(ctx).Info("Eviction refused: VM to move first", "vm", vm.Namespace+"/"+vm.Name, "pod", pod.Name, "node", node)
	return tooManyRequests(Explain(vm, node, s, now))
}

// Explain says what happens to vm, which must leave node, in the state s.
func Explain(vm *v1alpha2.VirtualMachine, node string, s State, now time.Time) string {
	name := vm.Namespace + "/" + vm.Name
	switch ok, reason, msg := s.migratable(); {
	case s.InFlight != nil:
		p := "starting"
		if reason, msg := s.InFlight.Outcome(); reason != "" {
			p = strings.TrimSpace(s.InFlight.Status.Progress + " " + reason + ": " + msg)
		}
		return fmt.Sprintf("VM %s is being live-migrated off node %s by VirtualMachineOperation %s (%s); its pod ends when the VM runs elsewhere", name, node, s.InFlight.Name, p)
	case !ok && reason == ReasonMigrationFails:
		m := fmt.Sprintf("VM %s cannot leave node %s yet: %s", name, node, msg)
		if wait := s.NextTry.Sub(now); wait > 0 {
			m += fmt.Sprintf("; next try in %s", wait.Round(time.Second))
		}
		return m + "; it keeps running on the node"
	case !ok:
		return fmt.Sprintf("VM %s cannot be live-migrated off node %s (%s): %s; it keeps running, so the drain waits: make room elsewhere, change the VM's placement, or stop it (ferry v stop %s -n %s)", name, node, reason, msg, vm.Name, vm.Namespace)
	case s.NextTry.After(now):
		return fmt.Sprintf("VM %s: the last evacuation off node %s failed (%s); next try in %s", name, node, failureText(s.LastFailure), s.NextTry.Sub(now).Round(time.Second))
	default:
		return fmt.Sprintf("VM %s will be live-migrated off node %s (%s); its pod ends when the VM runs elsewhere", name, node, msg)
	}
}

// migrating returns the VM's unfinished migration operation, from the cache, or nil.
func (w *Webhook) migrating(ctx context.Context, vm *v1alpha2.VirtualMachine) (*v1alpha2.VirtualMachineOperation, error) {
	var ops v1alpha2.VirtualMachineOperationList
	if err := w.Client.List(ctx, &ops, client.InNamespace(vm.Namespace), client.MatchingFields{power.IndexVMName: vm.Name}); err != nil {
		return nil, err
	}
	for i := range ops.Items {
		op := &ops.Items[i]
		if (op.Spec.Type == v1alpha2.OpEvict || op.Spec.Type == v1alpha2.OpMigrate) && !op.Finished() && op.DeletionTimestamp.IsZero() {
			return op, nil
		}
	}
	return nil, nil
}

// mark asks for the VM's evacuation off node: an annotation for the controller and the
// EvictionRequired condition for people.
func (w *Webhook) mark(ctx context.Context, vm *v1alpha2.VirtualMachine, node string) error {
	if vm.Annotations[v1alpha2.AnnotationEvacuateFrom] != node {
		patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, v1alpha2.AnnotationEvacuateFrom, node))
		if err := w.Client.Patch(ctx, vm, patch); err != nil {
			return err
		}
	}
	n := &corev1.Node{}
	reason, msg := v1alpha2.ReasonEvictionRequested, fmt.Sprintf("an eviction of the VM's pod on node %s was requested: the VM moves off the node first", node)
	if err := w.Client.Get(ctx, client.ObjectKey{Name: node}, n); err == nil && n.Spec.Unschedulable {
		reason, msg = v1alpha2.ReasonNodeDrained, fmt.Sprintf("node %s is cordoned and being drained: the VM moves off it", node)
	}
	if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionEvictionRequired); c != nil && c.Status == metav1.ConditionTrue && c.Reason == reason && c.Message == msg {
		return nil // marked already, as the cache shows: no read past it
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &v1alpha2.VirtualMachine{}
		reader := client.Reader(w.Client)
		if w.APIReader != nil {
			reader = w.APIReader
		}
		if err := reader.Get(ctx, client.ObjectKeyFromObject(vm), cur); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha2.VMConditionEvictionRequired); c != nil && c.Status == metav1.ConditionTrue && c.Reason == reason && c.Message == msg {
			return nil
		}
		orig := cur.DeepCopy()
		meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: v1alpha2.VMConditionEvictionRequired, Status: metav1.ConditionTrue,
			Reason: reason, Message: msg, ObservedGeneration: cur.Generation})
		return w.Client.Status().Patch(ctx, cur, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	})
}

func isActive(vm *v1alpha2.VirtualMachine, pod string) bool {
	for _, p := range vm.Status.VirtualMachinePods {
		if p.Name == pod {
			return p.Active
		}
	}
	return false
}

func (w *Webhook) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func tooManyRequests(msg string) admission.Response {
	return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{
		Allowed: false,
		Result: &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusTooManyRequests,
			Reason: metav1.StatusReasonTooManyRequests, Message: msg},
	}}
}
