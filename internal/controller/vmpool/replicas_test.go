package vmpool

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func TestPickForRemoval(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	vm := func(name string, age int) *v1alpha2.VirtualMachine {
		return &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Second))}}
	}
	active := []*v1alpha2.VirtualMachine{vm("p-b", 2), vm("p-a", 1), vm("p-d", 3), vm("p-c", 2)}
	cases := []struct {
		policy v1alpha2.ScaleDownPolicy
		n      int
		want   []string
	}{
		{v1alpha2.ScaleDownNewestFirst, 1, []string{"p-d"}},
		{v1alpha2.ScaleDownNewestFirst, 3, []string{"p-d", "p-c", "p-b"}}, // same second: by name
		{v1alpha2.ScaleDownOldestFirst, 2, []string{"p-a", "p-b"}},
		{v1alpha2.ScaleDownOldestFirst, 9, []string{"p-a", "p-b", "p-c", "p-d"}},
	}
	for _, c := range cases {
		var got []string
		for _, v := range pickForRemoval(active, c.policy, c.n) {
			got = append(got, v.Name)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s %d: %v, want %v", c.policy, c.n, got, c.want)
		}
	}
}

// TestDiskTemplateByName: a disk's template is found by its name, also when one template's
// name is a prefix of another's.
func TestDiskTemplateByName(t *testing.T) {
	pool := &v1alpha2.VirtualMachinePool{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: v1alpha2.VirtualMachinePoolSpec{VirtualDiskTemplates: []v1alpha2.VirtualDiskTemplate{{Name: "a"}, {Name: "a-b"}}}}
	s := &scope{pool: pool}
	vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "p-123abc"}}
	cases := []struct {
		disk, template string
		byVM           bool
	}{
		{"p-123abc-a", "a", true},
		{"p-123abc-a-b", "a-b", true},
		{"p-a-0f0f0f", "a", false},
		{"p-a-b-0f0f0f", "a-b", false},
		{"p-c-0f0f0f", "", false},
		{"other", "", false},
	}
	for _, c := range cases {
		tmpl, owner := s.diskTemplate(vm, c.disk)
		got := ""
		if tmpl != nil {
			got = tmpl.Name
		}
		if got != c.template || (tmpl != nil && (owner == vm) != c.byVM) {
			t.Errorf("%s: template %q (owner the VM: %v), want %q (%v)", c.disk, got, owner == vm, c.template, c.byVM)
		}
	}
}

// TestTakeRetainDisks: a new replica takes the most recently freed disk of each Retain
// template, never one a replica names or one being deleted, else a new name.
func TestTakeRetainDisks(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	pool := &v1alpha2.VirtualMachinePool{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u"},
		Spec: v1alpha2.VirtualMachinePoolSpec{VirtualDiskTemplates: []v1alpha2.VirtualDiskTemplate{
			{Name: "root"}, {Name: "cache", Reclaim: v1alpha2.DiskReclaim{OnScaleDown: v1alpha2.ReclaimRetain}},
			{Name: "logs", Reclaim: v1alpha2.DiskReclaim{OnScaleDown: v1alpha2.ReclaimRetain}}}}}
	disk := func(name, template string, freed time.Duration, deleting bool) v1alpha2.VirtualDisk {
		d := v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels:          map[string]string{v1alpha2.LabelPoolDiskTemplate: template},
			Annotations:     map[string]string{v1alpha2.AnnotationPoolDiskFreeSince: now.Add(-freed).Format(time.RFC3339)},
			OwnerReferences: []metav1.OwnerReference{{Kind: "VirtualMachinePool", Name: "p", UID: "u", Controller: new(bool)}}}}
		*d.OwnerReferences[0].Controller = true
		if deleting {
			ts := metav1.NewTime(now)
			d.DeletionTimestamp = &ts
		}
		return d
	}
	s := &scope{pool: pool,
		disks: []v1alpha2.VirtualDisk{
			disk("p-cache-000001", "cache", time.Hour, false),
			disk("p-cache-000002", "cache", time.Minute, false), // most recently freed, but used
			disk("p-cache-000003", "cache", 10*time.Minute, false),
			disk("p-cache-000004", "cache", time.Second, true), // being deleted
		},
		vms: []v1alpha2.VirtualMachine{{Spec: v1alpha2.VirtualMachineSpec{BlockDeviceRefs: []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.DiskDevice, Name: "p-cache-000002"}}}}},
	}
	got := s.takeRetainDisks(now)
	if got["cache"] != "p-cache-000003" {
		t.Errorf("cache: %q, want the most recently freed unused p-cache-000003", got["cache"])
	}
	if !retainName("p", "logs").MatchString(got["logs"]) {
		t.Errorf("logs: %q, want a new p-logs-<6 hex>", got["logs"])
	}
	if _, ok := got["root"]; ok {
		t.Errorf("root (Delete) got a Retain disk %q", got["root"])
	}
}
