package chaos

// What a chaos trial checks once the cluster settled, and what it logs meanwhile.

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/bench"
)

// check tests the invariants; final also asks the driver whether a VM ran in two places
// (which forgets what it reported). The second result says what is awaited.
func (r *chaosRun) check(ctx context.Context, since time.Time, final bool) ([]string, string) {
	var v []string
	vms, err := r.listVMs(ctx)
	if err != nil {
		return []string{"listing VMs: " + err.Error()}, err.Error()
	}
	ready, err := r.readyNodes(ctx)
	if err != nil {
		return []string{"listing nodes: " + err.Error()}, err.Error()
	}
	running, err := r.drv.running(ctx)
	if err != nil {
		return []string{"counting guests: " + err.Error()}, err.Error()
	}
	for _, name := range sortedVMNames(r.vmsOf(vms)) {
		vm := vms[name]
		id := r.vms[name]
		if vm == nil {
			v = append(v, name+": the VM is gone")
			continue
		}
		if vm.Status.Phase != v1alpha2.MachineRunning || !ready[vm.Status.NodeName] {
			v = append(v, fmt.Sprintf("%s: %s on %q, not Running on a Ready node", name, vm.Status.Phase, vm.Status.NodeName))
		}
		if n := running[r.ns+"/"+name]; n != 1 {
			v = append(v, fmt.Sprintf("%s: %d guests run, want exactly 1", name, n))
		}
		if vm.Status.IPAddress != id.ip {
			v = append(v, fmt.Sprintf("%s: address %s, was %s", name, vm.Status.IPAddress, id.ip))
		}
		var disk v1alpha2.VirtualDisk
		if err := r.c.Get(ctx, client.ObjectKey{Namespace: r.ns, Name: diskOf(name)}, &disk); err != nil || disk.UID != id.disk {
			v = append(v, fmt.Sprintf("%s: its disk %s is gone or replaced (%v)", name, diskOf(name), err))
		}
	}
	var ops v1alpha2.VirtualMachineOperationList
	if err := r.c.List(ctx, &ops, client.InNamespace(r.ns)); err != nil {
		return append(v, "listing operations: "+err.Error()), err.Error()
	}
	for _, op := range ops.Items {
		if op.CreationTimestamp.Time.Before(since.Add(-time.Second)) {
			continue
		}
		if !op.Finished() {
			v = append(v, fmt.Sprintf("operation %s (%s %s) is %s, not final", op.Name, op.Spec.Type, op.Spec.VirtualMachineName, op.Status.Phase))
		}
	}
	if final {
		ov, err := r.drv.overlaps(ctx)
		if err != nil {
			v = append(v, "reading overlaps: "+err.Error())
		}
		for _, o := range ov {
			v = append(v, "ran in two places at once: "+o)
		}
	}
	if len(v) > 0 {
		return v, v[0]
	}
	return nil, ""
}

func (r *chaosRun) vmsOf(cur map[string]*v1alpha2.VirtualMachine) map[string]*v1alpha2.VirtualMachine {
	out := map[string]*v1alpha2.VirtualMachine{}
	for name := range r.vms {
		out[name] = cur[name]
	}
	return out
}

func diskOf(vm string) string { return vm + "-disk" }

func (r *chaosRun) listVMs(ctx context.Context) (map[string]*v1alpha2.VirtualMachine, error) {
	var l v1alpha2.VirtualMachineList
	if err := r.c.List(ctx, &l, client.InNamespace(r.ns), client.MatchingLabels{bench.LabelBench: bench.BenchMarker}); err != nil {
		return nil, err
	}
	out := map[string]*v1alpha2.VirtualMachine{}
	for i := range l.Items {
		out[l.Items[i].Name] = &l.Items[i]
	}
	return out, nil
}

func (r *chaosRun) readyNodes(ctx context.Context) (map[string]bool, error) {
	var l corev1.NodeList
	if err := r.c.List(ctx, &l); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for i := range l.Items {
		if bench.NodeReady(&l.Items[i]) {
			out[l.Items[i].Name] = true
		}
	}
	return out, nil
}

func (r *chaosRun) launcherPods(ctx context.Context, vm string) ([]corev1.Pod, error) {
	var l corev1.PodList
	err := r.c.List(ctx, &l, client.InNamespace(r.ns), client.MatchingLabels{v1alpha2.LabelVMName: vm})
	return l.Items, err
}

// waitFor polls cond every 250 ms until it holds (true) or deadline passes (false).
func (r *chaosRun) waitFor(ctx context.Context, deadline time.Time, cond func() (bool, string)) bool {
	for {
		if ok, _ := cond(); ok {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		if bench.Sleep(ctx, 250*time.Millisecond) != nil {
			return false
		}
	}
}

// watch logs, every 250 ms, what changed in the VMs, their pods, operations and nodes.
func (r *chaosRun) watch(ctx context.Context, t *chaosTrial) {
	last := map[string]string{}
	for ctx.Err() == nil {
		now := map[string]string{}
		if vms, err := r.listVMs(ctx); err == nil {
			for n, v := range vms {
				now["vm "+n] = fmt.Sprintf("%s on %s %s", v.Status.Phase, v.Status.NodeName, v.Status.IPAddress)
			}
		}
		var ops v1alpha2.VirtualMachineOperationList
		if err := r.c.List(ctx, &ops, client.InNamespace(r.ns)); err == nil {
			for _, op := range ops.Items {
				if !op.CreationTimestamp.Time.Before(t.t0.Add(-time.Second)) {
					now["vmop "+op.Name] = fmt.Sprintf("%s %s: %s %s", op.Spec.Type, op.Spec.VirtualMachineName, op.Status.Phase, op.Status.Progress)
				}
			}
		}
		var pods corev1.PodList
		if err := r.c.List(ctx, &pods, client.InNamespace(r.ns), client.HasLabels{v1alpha2.LabelVMName}); err == nil {
			for _, p := range pods.Items {
				del := ""
				if p.DeletionTimestamp != nil {
					del = " (deleting)"
				}
				now["pod "+p.Name] = fmt.Sprintf("%s on %s%s", p.Status.Phase, p.Spec.NodeName, del)
			}
		}
		var nodes corev1.NodeList
		if err := r.c.List(ctx, &nodes); err == nil {
			for i := range nodes.Items {
				n := &nodes.Items[i]
				s := "NotReady"
				if bench.NodeReady(n) {
					s = "Ready"
				}
				if n.Spec.Unschedulable {
					s += ",SchedulingDisabled"
				}
				now["node "+n.Name] = s
			}
		}
		if len(now) > 0 { // a failed list (apiserver restarting) says nothing
			var keys []string
			for k := range now {
				keys = append(keys, k)
			}
			for k := range last {
				if _, ok := now[k]; !ok {
					keys = append(keys, k)
				}
			}
			sort.Strings(keys)
			keys = slices.Compact(keys)
			for _, k := range keys {
				if now[k] != last[k] {
					if now[k] == "" {
						t.logf("%s gone", k)
					} else {
						t.logf("%s: %s", k, now[k])
					}
				}
			}
			last = now
		}
		if bench.Sleep(ctx, 250*time.Millisecond) != nil {
			return
		}
	}
}

// pruneOperations deletes the benchmark's final operations created before t.
func (r *chaosRun) pruneOperations(ctx context.Context, t time.Time) {
	var ops v1alpha2.VirtualMachineOperationList
	if err := r.c.List(ctx, &ops, client.InNamespace(r.ns), client.MatchingLabels{bench.LabelBench: bench.BenchMarker}); err != nil {
		return
	}
	for i := range ops.Items {
		if ops.Items[i].Finished() && ops.Items[i].CreationTimestamp.Time.Before(t) {
			_ = r.c.Delete(ctx, &ops.Items[i])
		}
	}
}
