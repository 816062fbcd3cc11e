package controller_test

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// poolDisk is a disk template: a blank disk of 64Mi.
func poolDisk(name string, reclaim v1alpha2.DiskReclaim) v1alpha2.VirtualDiskTemplate {
	size := resource.MustParse("64Mi")
	return v1alpha2.VirtualDiskTemplate{Name: name, Reclaim: reclaim,
		Spec: v1alpha2.VirtualDiskTemplateSpec{PersistentVolumeClaim: v1alpha2.DiskClaim{Size: &size}}}
}

// newPool is a pool whose replicas stay off (the envtest has no nodes) and name each disk
// template, in order, then a shared ClusterVirtualImage.
func newPool(ns, name string, replicas int32, policy v1alpha2.ScaleDownPolicy, disks ...v1alpha2.VirtualDiskTemplate) *v1alpha2.VirtualMachinePool {
	p := &v1alpha2.VirtualMachinePool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha2.VirtualMachinePoolSpec{Replicas: &replicas, ScaleDownPolicy: policy, VirtualDiskTemplates: disks,
			VirtualMachineTemplate: v1alpha2.VirtualMachineTemplate{
				Metadata: v1alpha2.VirtualMachineTemplateMetadata{Labels: map[string]string{"app": "runner"}, Annotations: map[string]string{"team": "ci"}},
				Spec: v1alpha2.VirtualMachineSpec{RunPolicy: v1alpha2.AlwaysOff, CPU: v1alpha2.CPUSpec{Cores: 1},
					Memory: v1alpha2.MemorySpec{Size: resource.MustParse("128Mi")}}}}}
	for _, d := range disks {
		p.Spec.VirtualMachineTemplate.Spec.BlockDeviceRefs = append(p.Spec.VirtualMachineTemplate.Spec.BlockDeviceRefs, v1alpha2.BlockDeviceRef{Kind: v1alpha2.DiskDevice, Name: d.Name})
	}
	p.Spec.VirtualMachineTemplate.Spec.BlockDeviceRefs = append(p.Spec.VirtualMachineTemplate.Spec.BlockDeviceRefs, v1alpha2.BlockDeviceRef{Kind: v1alpha2.ClusterImageDevice, Name: "tools-iso"})
	return p
}

func getPool(t *testing.T, ns, name string) *v1alpha2.VirtualMachinePool {
	t.Helper()
	p := &v1alpha2.VirtualMachinePool{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// scalePool sets the replicas through the scale subresource, as `kubectl scale` does.
func scalePool(ns, name string, n int32) error {
	p := &v1alpha2.VirtualMachinePool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	sc := &autoscalingv1.Scale{}
	if err := k8s.SubResource("scale").Get(ctx, p, sc); err != nil {
		return err
	}
	sc.Spec.Replicas = n
	return k8s.SubResource("scale").Update(ctx, p, client.WithSubResourceBody(sc))
}

// replicas are the pool's VMs by name.
func replicas(t *testing.T, ns, pool string) map[string]*v1alpha2.VirtualMachine {
	t.Helper()
	var list v1alpha2.VirtualMachineList
	if err := k8s.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{v1alpha2.LabelPool: pool}); err != nil {
		t.Fatal(err)
	}
	out := map[string]*v1alpha2.VirtualMachine{}
	for i := range list.Items {
		out[list.Items[i].Name] = &list.Items[i]
	}
	return out
}

// waitReplicas waits until the pool has exactly n VMs, none Terminating, and says so in
// its status; it returns them.
func waitReplicas(t *testing.T, ns, pool string, n int) map[string]*v1alpha2.VirtualMachine {
	t.Helper()
	var vms map[string]*v1alpha2.VirtualMachine
	eventually(t, timeout, fmt.Sprintf("pool %s with %d replicas", pool, n), func() (bool, string) {
		vms = replicas(t, ns, pool)
		p := getPool(t, ns, pool)
		names := slices.Sorted(func(yield func(string) bool) {
			for k := range vms {
				if !yield(k) {
					return
				}
			}
		})
		seen := fmt.Sprintf("VMs %v, status.replicas %d", names, p.Status.Replicas)
		if len(vms) != n || p.Status.Replicas != int32(n) {
			return false, seen
		}
		for _, vm := range vms {
			if !vm.DeletionTimestamp.IsZero() {
				return false, seen
			}
		}
		return true, seen
	})
	return vms
}

// disksOf are the pool's disks made from a template, by name.
func disksOf(t *testing.T, ns, pool, template string) map[string]*v1alpha2.VirtualDisk {
	t.Helper()
	var list v1alpha2.VirtualDiskList
	if err := k8s.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{v1alpha2.LabelPool: pool, v1alpha2.LabelPoolDiskTemplate: template}); err != nil {
		t.Fatal(err)
	}
	out := map[string]*v1alpha2.VirtualDisk{}
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp.IsZero() {
			out[list.Items[i].Name] = &list.Items[i]
		}
	}
	return out
}

func waitDiskCount(t *testing.T, ns, pool, template string, n int) map[string]*v1alpha2.VirtualDisk {
	t.Helper()
	var disks map[string]*v1alpha2.VirtualDisk
	eventually(t, timeout, fmt.Sprintf("%d %s disks of pool %s", n, template, pool), func() (bool, string) {
		disks = disksOf(t, ns, pool, template)
		return len(disks) == n, fmt.Sprint(len(disks), " disks")
	})
	return disks
}

// diskRef is the disk a replica names in place of a template's VirtualDisk ref (index i).
func diskRef(vm *v1alpha2.VirtualMachine, i int) string { return vm.Spec.BlockDeviceRefs[i].Name }

// afterCreationSecond waits until the clock is past the second the VMs were made in: the
// API's creationTimestamp counts whole seconds, and scale-down orders replicas by it.
func afterCreationSecond(t *testing.T, vms map[string]*v1alpha2.VirtualMachine) {
	t.Helper()
	var latest time.Time
	for _, vm := range vms {
		if vm.CreationTimestamp.After(latest) {
			latest = vm.CreationTimestamp.Time
		}
	}
	eventually(t, 3*time.Second, "the clock past the replicas' creation second", func() (bool, string) {
		return time.Now().After(latest.Add(time.Second)), time.Now().String()
	})
}

func names(vms map[string]*v1alpha2.VirtualMachine) []string {
	out := make([]string, 0, len(vms))
	for k := range vms {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestPoolReplicasNamesLabelsAndOwnDisks: replicas are named <pool>-<random>, labelled
// and owned by the pool, each with its own <replica>-<template> disk owned by the VM; the
// shared image stays as it is; status and the scale subresource show the selector.
func TestPoolReplicasNamesLabelsAndOwnDisks(t *testing.T) {
	ns := newNamespace(t)
	pool := newPool(ns, "web", 2, v1alpha2.ScaleDownNewestFirst, poolDisk("root", v1alpha2.DiskReclaim{}))
	if err := k8s.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	vms := waitReplicas(t, ns, "web", 2)
	p := getPool(t, ns, "web")
	name := regexp.MustCompile(`^web-[0-9a-f]{6}$`)
	for _, vm := range vms {
		if !name.MatchString(vm.Name) {
			t.Errorf("replica %s is not named web-<6 hex digits>", vm.Name)
		}
		if vm.Labels[v1alpha2.LabelPool] != "web" || vm.Labels[v1alpha2.LabelPoolUID] != string(p.UID) || vm.Labels["app"] != "runner" ||
			vm.Labels[v1alpha2.LabelPoolTemplateHash] != p.Status.DesiredTemplateHash || vm.Annotations["team"] != "ci" {
			t.Errorf("replica %s: labels %v annotations %v (pool hash %s)", vm.Name, vm.Labels, vm.Annotations, p.Status.DesiredTemplateHash)
		}
		if ref := metav1.GetControllerOf(vm); ref == nil || ref.UID != p.UID || ref.Kind != "VirtualMachinePool" {
			t.Errorf("replica %s controller %+v, want the pool", vm.Name, ref)
		}
		want := []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.DiskDevice, Name: vm.Name + "-root"}, {Kind: v1alpha2.ClusterImageDevice, Name: "tools-iso"}}
		if !slices.Equal(vm.Spec.BlockDeviceRefs, want) {
			t.Errorf("replica %s blockDeviceRefs %+v, want %+v", vm.Name, vm.Spec.BlockDeviceRefs, want)
		}
	}
	disks := waitDiskCount(t, ns, "web", "root", 2)
	for _, vm := range vms {
		d := disks[vm.Name+"-root"]
		if d == nil {
			t.Fatalf("no disk %s-root among %v", vm.Name, disks)
		}
		if ref := metav1.GetControllerOf(d); ref == nil || ref.UID != vm.UID || ref.Kind != "VirtualMachine" {
			t.Errorf("disk %s controller %+v, want VM %s", d.Name, ref, vm.Name)
		}
		if d.Spec.PersistentVolumeClaim.Size == nil || d.Spec.PersistentVolumeClaim.Size.String() != "64Mi" {
			t.Errorf("disk %s spec %+v, want the template's 64Mi", d.Name, d.Spec)
		}
	}
	wantSel := v1alpha2.LabelPoolUID + "=" + string(p.UID)
	if p.Status.Selector != wantSel {
		t.Errorf("status.selector %q, want %q", p.Status.Selector, wantSel)
	}
	sc := &autoscalingv1.Scale{}
	if err := k8s.SubResource("scale").Get(ctx, p, sc); err != nil {
		t.Fatal(err)
	}
	if sc.Spec.Replicas != 2 || sc.Status.Replicas != 2 || sc.Status.Selector != wantSel {
		t.Errorf("scale %+v, want 2/2 with selector %s", sc, wantSel)
	}
}

// TestPoolScaleDownNewestFirst: the replicas made last go first, with their own disks.
func TestPoolScaleDownNewestFirst(t *testing.T) {
	ns := newNamespace(t)
	if err := k8s.Create(ctx, newPool(ns, "np", 1, v1alpha2.ScaleDownNewestFirst, poolDisk("root", v1alpha2.DiskReclaim{}))); err != nil {
		t.Fatal(err)
	}
	first := waitReplicas(t, ns, "np", 1)
	afterCreationSecond(t, first)
	if err := scalePool(ns, "np", 3); err != nil {
		t.Fatal(err)
	}
	all := waitReplicas(t, ns, "np", 3)
	waitDiskCount(t, ns, "np", "root", 3)
	if err := scalePool(ns, "np", 1); err != nil {
		t.Fatal(err)
	}
	left := waitReplicas(t, ns, "np", 1)
	if !slices.Equal(names(left), names(first)) {
		t.Errorf("NewestFirst left %v, want the oldest %v (of %v)", names(left), names(first), names(all))
	}
	disks := waitDiskCount(t, ns, "np", "root", 1)
	if disks[names(first)[0]+"-root"] == nil {
		t.Errorf("disks left %v, want the remaining replica's", disks)
	}
}

// TestPoolScaleDownOldestFirst: the replicas made first go first.
func TestPoolScaleDownOldestFirst(t *testing.T) {
	ns := newNamespace(t)
	if err := k8s.Create(ctx, newPool(ns, "op", 2, v1alpha2.ScaleDownOldestFirst, poolDisk("root", v1alpha2.DiskReclaim{}))); err != nil {
		t.Fatal(err)
	}
	first := waitReplicas(t, ns, "op", 2)
	afterCreationSecond(t, first)
	if err := scalePool(ns, "op", 4); err != nil {
		t.Fatal(err)
	}
	all := waitReplicas(t, ns, "op", 4)
	var newer []string
	for n := range all {
		if first[n] == nil {
			newer = append(newer, n)
		}
	}
	sort.Strings(newer)
	if err := scalePool(ns, "op", 2); err != nil {
		t.Fatal(err)
	}
	left := waitReplicas(t, ns, "op", 2)
	if !slices.Equal(names(left), newer) {
		t.Errorf("OldestFirst left %v, want the newer %v", names(left), newer)
	}
	waitDiskCount(t, ns, "op", "root", 2)
}

// TestPoolExplicitRefusesScaleDown: under Explicit a lower replicas is refused, through
// the scale subresource and the spec; scale-up is allowed; after a switch to another
// policy the pool scales down.
func TestPoolExplicitRefusesScaleDown(t *testing.T) {
	ns := newNamespace(t)
	if err := k8s.Create(ctx, newPool(ns, "ex", 2, v1alpha2.ScaleDownExplicit, poolDisk("root", v1alpha2.DiskReclaim{}))); err != nil {
		t.Fatal(err)
	}
	waitReplicas(t, ns, "ex", 2)
	const want = "scaleDownPolicy Explicit refuses a scale-down"
	err := scalePool(ns, "ex", 1)
	if err == nil || !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), want) {
		t.Errorf("scale to 1 under Explicit: %v, want refused with %q", err, want)
	}
	p := getPool(t, ns, "ex")
	one := int32(1)
	p.Spec.Replicas = &one
	if err := k8s.Update(ctx, p); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("spec.replicas 1 under Explicit: %v, want refused with %q", err, want)
	}
	if err := scalePool(ns, "ex", 3); err != nil {
		t.Fatalf("scale-up under Explicit: %v", err)
	}
	waitReplicas(t, ns, "ex", 3)
	p = getPool(t, ns, "ex")
	p.Spec.ScaleDownPolicy = v1alpha2.ScaleDownNewestFirst
	if err := k8s.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := scalePool(ns, "ex", 1); err != nil {
		t.Fatalf("scale-down after leaving Explicit: %v", err)
	}
	waitReplicas(t, ns, "ex", 1)
}

// TestPoolReplacesDeletedReplica: a VM deleted by hand is replaced under another name,
// and its own disk goes with it.
func TestPoolReplacesDeletedReplica(t *testing.T) {
	ns := newNamespace(t)
	if err := k8s.Create(ctx, newPool(ns, "rp", 2, v1alpha2.ScaleDownNewestFirst, poolDisk("root", v1alpha2.DiskReclaim{}))); err != nil {
		t.Fatal(err)
	}
	before := waitReplicas(t, ns, "rp", 2)
	waitDiskCount(t, ns, "rp", "root", 2)
	gone := names(before)[0]
	if err := k8s.Delete(ctx, before[gone]); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "a replacement of "+gone, func() (bool, string) {
		vms := replicas(t, ns, "rp")
		_, still := vms[gone]
		return len(vms) == 2 && !still, fmt.Sprint(names(vms))
	})
	after := waitReplicas(t, ns, "rp", 2)
	disks := waitDiskCount(t, ns, "rp", "root", 2)
	for n := range after {
		if disks[n+"-root"] == nil {
			t.Errorf("replica %s has no disk; disks %v", n, disks)
		}
	}
	if disks[gone+"-root"] != nil {
		t.Errorf("the deleted replica's disk %s-root stays", gone)
	}
}

// TestPoolRetainDisksAreReusedAndCollected: Retain disks are the pool's, stay free after
// a scale-down (for good without ttl; beyond keep only for ttl) and are taken again on
// scale-up.
func TestPoolRetainDisksAreReusedAndCollected(t *testing.T) {
	ns := newNamespace(t)
	ttl := &metav1.Duration{Duration: 2 * time.Second}
	pool := newPool(ns, "rt", 3, v1alpha2.ScaleDownNewestFirst,
		poolDisk("root", v1alpha2.DiskReclaim{OnScaleDown: v1alpha2.ReclaimDelete}),
		poolDisk("cache", v1alpha2.DiskReclaim{OnScaleDown: v1alpha2.ReclaimRetain}),
		poolDisk("scratch", v1alpha2.DiskReclaim{OnScaleDown: v1alpha2.ReclaimRetain, Keep: 1, TTL: ttl}))
	if err := k8s.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	vms := waitReplicas(t, ns, "rt", 3)
	p := getPool(t, ns, "rt")
	caches := waitDiskCount(t, ns, "rt", "cache", 3)
	waitDiskCount(t, ns, "rt", "scratch", 3)
	name := regexp.MustCompile(`^rt-cache-[0-9a-f]{6}$`)
	for _, vm := range vms {
		c := diskRef(vm, 1)
		if !name.MatchString(c) || caches[c] == nil {
			t.Errorf("replica %s names cache disk %q, want one of rt-cache-<6 hex> %v", vm.Name, c, caches)
		}
	}
	for _, d := range caches {
		if ref := metav1.GetControllerOf(d); ref == nil || ref.UID != p.UID {
			t.Errorf("cache disk %s controller %+v, want the pool", d.Name, ref)
		}
	}

	if err := scalePool(ns, "rt", 0); err != nil {
		t.Fatal(err)
	}
	waitReplicas(t, ns, "rt", 0)
	waitDiskCount(t, ns, "rt", "root", 0)
	// keep 1: of the three free scratch disks one stays past the ttl.
	scratch := waitDiskCount(t, ns, "rt", "scratch", 1)
	holdsFor(t, 2*ttl.Duration, "the kept scratch disk stays", func() (bool, string) {
		d := disksOf(t, ns, "rt", "scratch")
		return len(d) == 1, fmt.Sprint(len(d), " scratch disks")
	})
	free := disksOf(t, ns, "rt", "cache")
	if len(free) != 3 {
		t.Fatalf("cache disks (no ttl) after the scale-down: %d, want all 3 kept", len(free))
	}
	for _, d := range free {
		if _, err := time.Parse(time.RFC3339, d.Annotations[v1alpha2.AnnotationPoolDiskFreeSince]); err != nil {
			t.Errorf("free disk %s: annotation free-since %q: %v", d.Name, d.Annotations[v1alpha2.AnnotationPoolDiskFreeSince], err)
		}
	}

	if err := scalePool(ns, "rt", 2); err != nil {
		t.Fatal(err)
	}
	vms = waitReplicas(t, ns, "rt", 2)
	var kept string
	for n := range scratch {
		kept = n
	}
	tookScratch := 0
	for _, vm := range vms {
		if caches[diskRef(vm, 1)] == nil {
			t.Errorf("replica %s after scale-up names cache disk %s, want one of the freed %v", vm.Name, diskRef(vm, 1), names2(caches))
		}
		if diskRef(vm, 2) == kept {
			tookScratch++
		}
	}
	if tookScratch != 1 {
		t.Errorf("the kept scratch disk %s is named by %d replicas, want 1", kept, tookScratch)
	}
	waitDiskCount(t, ns, "rt", "scratch", 2)
	eventually(t, timeout, "used cache disks not marked free", func() (bool, string) {
		marked := 0
		for _, d := range disksOf(t, ns, "rt", "cache") {
			if _, ok := d.Annotations[v1alpha2.AnnotationPoolDiskFreeSince]; ok {
				marked++
			}
		}
		return marked == 1, fmt.Sprint(marked, " marked free")
	})
	if err := scalePool(ns, "rt", 3); err != nil {
		t.Fatal(err)
	}
	vms = waitReplicas(t, ns, "rt", 3)
	used := map[string]bool{}
	for _, vm := range vms {
		used[diskRef(vm, 1)] = true
	}
	if len(used) != 3 || len(disksOf(t, ns, "rt", "cache")) != 3 {
		t.Errorf("after scale-up to 3 the replicas name cache disks %v, want the 3 freed ones %v", used, names2(caches))
	}
}

func names2(disks map[string]*v1alpha2.VirtualDisk) []string {
	out := make([]string, 0, len(disks))
	for k := range disks {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestPoolAdmission: every refusal says what to fix.
func TestPoolAdmission(t *testing.T) {
	ns := newNamespace(t)
	root := poolDisk("root", v1alpha2.DiskReclaim{})
	cases := []struct {
		name   string
		change func(*v1alpha2.VirtualMachinePool)
		want   string
	}{
		{"template not referenced", func(p *v1alpha2.VirtualMachinePool) {
			p.Spec.VirtualDiskTemplates = append(p.Spec.VirtualDiskTemplates, poolDisk("data", v1alpha2.DiskReclaim{}))
		}, "each virtualDiskTemplates entry must be referenced by a VirtualDisk entry"},
		{"reference without template", func(p *v1alpha2.VirtualMachinePool) {
			p.Spec.VirtualMachineTemplate.Spec.BlockDeviceRefs = append(p.Spec.VirtualMachineTemplate.Spec.BlockDeviceRefs, v1alpha2.BlockDeviceRef{Kind: v1alpha2.DiskDevice, Name: "data"})
		}, "must name a virtualDiskTemplates entry"},
		{"template referenced twice", func(p *v1alpha2.VirtualMachinePool) {
			p.Spec.VirtualMachineTemplate.Spec.BlockDeviceRefs = append(p.Spec.VirtualMachineTemplate.Spec.BlockDeviceRefs, v1alpha2.BlockDeviceRef{Kind: v1alpha2.DiskDevice, Name: "root"})
		}, "each virtualDiskTemplates entry must be referenced exactly once"},
		{"template names not unique", func(p *v1alpha2.VirtualMachinePool) {
			p.Spec.VirtualDiskTemplates = append(p.Spec.VirtualDiskTemplates, root)
		}, "Duplicate value"},
		{"osType Legacy", func(p *v1alpha2.VirtualMachinePool) {
			p.Spec.VirtualMachineTemplate.Spec.OSType = v1alpha2.OSLegacy
		}, "The Legacy osType is not supported in a VirtualMachinePool"},
		{"keep without Retain", func(p *v1alpha2.VirtualMachinePool) {
			p.Spec.VirtualDiskTemplates[0].Reclaim = v1alpha2.DiskReclaim{OnScaleDown: v1alpha2.ReclaimDelete, Keep: 2, TTL: &metav1.Duration{Duration: time.Minute}}
		}, "keep and ttl are only valid with onScaleDown: Retain"},
		{"keep without ttl", func(p *v1alpha2.VirtualMachinePool) {
			p.Spec.VirtualDiskTemplates[0].Reclaim = v1alpha2.DiskReclaim{OnScaleDown: v1alpha2.ReclaimRetain, Keep: 2}
		}, "keep requires ttl"},
		{"an address for every replica", func(p *v1alpha2.VirtualMachinePool) {
			p.Spec.VirtualMachineTemplate.Spec.VirtualMachineIPAddressName = "one"
		}, "every replica gets an address of its own"},
		{"no scaleDownPolicy", func(p *v1alpha2.VirtualMachinePool) { p.Spec.ScaleDownPolicy = "" }, "scaleDownPolicy"},
		{"negative replicas", func(p *v1alpha2.VirtualMachinePool) { n := int32(-1); p.Spec.Replicas = &n }, "spec.replicas"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newPool(ns, fmt.Sprintf("bad-%d", i), 1, v1alpha2.ScaleDownNewestFirst, root)
			c.change(p)
			err := k8s.Create(ctx, p)
			if err == nil {
				t.Fatalf("accepted; want refused with %q", c.want)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("refused with %v; want %q", err, c.want)
			}
		})
	}
	// The template names' own rule says how to fix it, besides the list's duplicate error.
	p := newPool(ns, "dup", 1, v1alpha2.ScaleDownNewestFirst, root, root)
	if err := k8s.Create(ctx, p); err == nil || !strings.Contains(err.Error(), "virtualDiskTemplates names must be unique") {
		t.Errorf("duplicate template names: %v", err)
	}
}

// TestPoolSaysWhyAReplicaCannotBeMade: a template that makes no valid VM (a label the
// apiserver refuses) leaves the pool Progressing False with the refusal, and an event.
func TestPoolSaysWhyAReplicaCannotBeMade(t *testing.T) {
	ns := newNamespace(t)
	p := newPool(ns, "badlabel", 1, v1alpha2.ScaleDownNewestFirst, poolDisk("root", v1alpha2.DiskReclaim{}))
	p.Spec.VirtualMachineTemplate.Metadata.Labels["not a label!"] = "x"
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "Progressing False with the refusal", func() (bool, string) {
		c := meta.FindStatusCondition(getPool(t, ns, "badlabel").Status.Conditions, v1alpha2.PoolConditionProgressing)
		if c == nil {
			return false, "no condition"
		}
		return c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "cannot make a replica") && strings.Contains(c.Message, "not a label!"), c.Message
	})
	waitEvent(t, ns, "VirtualMachinePool", "badlabel", "ReplicaRefused")
	if vms := replicas(t, ns, "badlabel"); len(vms) != 0 {
		t.Errorf("replicas %v, want none", names(vms))
	}
}
