package controller_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/storage"
)

func newSnapshot(ns, name, disk string, required bool) *v1alpha2.VirtualDiskSnapshot {
	return &v1alpha2.VirtualDiskSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha2.VirtualDiskSnapshotSpec{VirtualDiskName: disk, RequiredConsistency: required}}
}

// waitSnapshot waits for the snapshot's phase and, if reason is given, the reason of its
// VirtualDiskSnapshotReady condition and words of its message.
func waitSnapshot(t *testing.T, ns, name string, phase v1alpha2.VirtualDiskSnapshotPhase, reason string, words ...string) *v1alpha2.VirtualDiskSnapshot {
	t.Helper()
	s := &v1alpha2.VirtualDiskSnapshot{}
	eventually(t, timeout, fmt.Sprintf("snapshot %s %s %s", name, phase, reason), func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(s.Status.Conditions, v1alpha2.SnapshotConditionReady)
		if s.Status.Phase != phase || c == nil {
			return false, fmt.Sprintf("%s %+v", s.Status.Phase, s.Status.Conditions)
		}
		if reason != "" && c.Reason != reason {
			return false, c.Reason + ": " + c.Message
		}
		for _, w := range words {
			if !strings.Contains(c.Message, w) {
				return false, c.Reason + ": " + c.Message
			}
		}
		return true, ""
	})
	return s
}

// qemuIO runs qemu-io commands on a qcow2 file (a write, or a read that checks a pattern).
func qemuIO(t *testing.T, path string, cmds ...string) error {
	t.Helper()
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", append(args, path)...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "Pattern verification failed") || strings.Contains(string(out), "failed") {
		return fmt.Errorf("qemu-io %v %s: %v: %s", cmds, path, err, out)
	}
	return nil
}

func consistent(s *v1alpha2.VirtualDiskSnapshot) string {
	if s.Status.Consistent == nil {
		return "unset"
	}
	return fmt.Sprint(*s.Status.Consistent)
}

// TestDiskSnapshotAndRestore: a snapshot of a disk no VM uses (an overlay of an image) is
// a standalone qcow2 copy of it at that moment (Ready, consistent true): it holds the
// image's data and what was written to the disk, and not what is written afterwards. A
// disk restored from it (as large as asked for) and a VirtualImage made from it hold the
// same data; a size below the snapshot's fails the disk with the size to ask for. The
// spec cannot change; requiredConsistency defaults to true; deleting the snapshot removes
// its file.
func TestDiskSnapshotAndRestore(t *testing.T) {
	ns := newNamespace(t)
	src := sourceFile(t, ns+"-snap-base.qcow2", "-f", "qcow2", "1M")
	if err := qemuIO(t, src, "write -P 0x11 0 64k"); err != nil {
		t.Fatal(err)
	}
	cvi := fileImage(ns+"-snap-base", src)
	createAll(t, cvi, diskFromImage(ns, "data", cvi.Name, "8Mi"))
	vd := waitDisk(t, ns, "data", v1alpha2.ImageReady)
	if err := qemuIO(t, vd.Status.Path, "write -P 0x5a 4M 64k"); err != nil {
		t.Fatal(err)
	}

	createAll(t, newSnapshot(ns, "data-1", "data", true))
	s := waitSnapshot(t, ns, "data-1", v1alpha2.SnapshotReady, v1alpha2.ReasonSnapshotReady, "no running VM")
	if consistent(s) != "true" {
		t.Errorf("a snapshot of a disk no VM uses has consistent %s, want true", consistent(s))
	}
	if c := meta.FindStatusCondition(s.Status.Conditions, v1alpha2.SnapshotConditionDiskReady); c == nil || c.Status != metav1.ConditionTrue || c.Reason != v1alpha2.ReasonSnapshotDiskReady {
		t.Errorf("VirtualDiskReady %+v", c)
	}
	file := storage.SnapshotPath(storageDir, s)
	if !strings.Contains(file, "/snapshots/"+ns+"/data-1-") {
		t.Errorf("the snapshot's file %s is not under its namespace", file)
	}
	if size, backing := qemuInfo(t, file); size != 8<<20 || backing != "" {
		t.Errorf("the snapshot's file: %d bytes backed by %q; want 8Mi, standalone", size, backing)
	}
	if out, err := exec.Command("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", vd.Status.Path, file).CombinedOutput(); err != nil {
		t.Errorf("the snapshot differs from its disk: %v: %s", err, out)
	}
	// The disk changes; the snapshot keeps the moment it was taken.
	if err := qemuIO(t, vd.Status.Path, "write -P 0x77 4M 64k"); err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(t, file, "read -P 0x11 0 64k", "read -P 0x5a 4M 64k"); err != nil {
		t.Errorf("the snapshot lost the disk's data: %v", err)
	}

	restored := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "restored"},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: refSource(v1alpha2.VirtualDiskSnapshotKind, "data-1", "")}}
	q := resource.MustParse("16Mi")
	restored.Spec.PersistentVolumeClaim.Size = &q
	small := restored.DeepCopy()
	small.Name = "too-small"
	q2 := resource.MustParse("4Mi")
	small.Spec.PersistentVolumeClaim.Size = &q2
	fromSnap := newVI(ns, "from-snapshot", *refSource(v1alpha2.VirtualDiskSnapshotKind, "data-1", ""))
	createAll(t, restored, small, fromSnap)
	rd := waitDisk(t, ns, "restored", v1alpha2.ImageReady)
	if size, backing := qemuInfo(t, rd.Status.Path); size != 16<<20 || backing != "" || rd.Status.Capacity != "16Mi" {
		t.Errorf("disk restored from a snapshot: %d bytes backed by %q, capacity %s; want 16Mi, standalone", size, backing, rd.Status.Capacity)
	}
	if rd.Status.SourceUID != s.UID {
		t.Errorf("restored disk's sourceUID %q, want the snapshot's %q", rd.Status.SourceUID, s.UID)
	}
	if err := qemuIO(t, rd.Status.Path, "read -P 0x11 0 64k", "read -P 0x5a 4M 64k", "read -P 0 8M 64k"); err != nil {
		t.Errorf("the restored disk does not hold the snapshot's data: %v", err)
	}
	if msg := imageReadyMessage(waitDisk(t, ns, "too-small", v1alpha2.ImageFailed).Status.Conditions); !strings.Contains(msg, "ask for at least 8Mi") {
		t.Errorf("a disk smaller than its snapshot says %q", msg)
	}
	vi := waitVI(t, ns, "from-snapshot", v1alpha2.ImageReady)
	if err := qemuIO(t, vi.Status.Path, "read -P 0x5a 4M 64k"); err != nil || vi.Status.SourceUID != s.UID {
		t.Errorf("VirtualImage from a snapshot (sourceUID %q): %v", vi.Status.SourceUID, err)
	}

	// Validation: the spec is immutable; requiredConsistency defaults to true; a disk's
	// objectRef to a snapshot takes no namespace.
	s.Spec.VirtualDiskName = "other"
	if err := k8s.Update(ctx, s); err == nil || !strings.Contains(err.Error(), "spec cannot change") {
		t.Errorf("changing a snapshot's disk was not refused: %v", err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha2.GroupVersion.String(), "kind": v1alpha2.VirtualDiskSnapshotKind,
		"metadata": map[string]any{"name": "defaulted", "namespace": ns},
		"spec":     map[string]any{"virtualDiskName": "data"},
	}}
	if err := k8s.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	if req, found, _ := unstructured.NestedBool(u.Object, "spec", "requiredConsistency"); !found || !req {
		t.Errorf("requiredConsistency left out reads %v (found %v), want the default true", req, found)
	}
	if err := k8s.Create(ctx, newSnapshot(ns, "nameless", "", true)); err == nil || !strings.Contains(err.Error(), "virtualDiskName") {
		t.Errorf("a snapshot without a disk name was not refused: %v", err)
	}
	elsewhere := restored.DeepCopy()
	elsewhere.ObjectMeta = metav1.ObjectMeta{Namespace: ns, Name: "elsewhere"}
	elsewhere.Spec.DataSource.ObjectRef.Namespace = "other"
	if err := k8s.Create(ctx, elsewhere); err == nil || !strings.Contains(err.Error(), "leave out objectRef.namespace") {
		t.Errorf("a disk from another namespace's snapshot was not refused: %v", err)
	}

	// Deleting the snapshot removes its file; the restored disk, a copy, stays.
	if err := k8s.Delete(ctx, s); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the snapshot and its file gone", func() (bool, string) {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(s), &v1alpha2.VirtualDiskSnapshot{})
		_, serr := os.Stat(file)
		return client.IgnoreNotFound(err) == nil && err != nil && os.IsNotExist(serr), fmt.Sprint(err, serr)
	})
	if err := qemuIO(t, rd.Status.Path, "read -P 0x5a 4M 64k"); err != nil {
		t.Errorf("the restored disk after its snapshot went: %v", err)
	}
}

// TestDiskSnapshotOfRunningVM: the disk of a VM that runs. With requiredConsistency true
// the snapshot stays Pending (PotentiallyInconsistent) and says why and what to do, and a
// disk restored from it waits and says so; with false it is copied at once (consistent
// false); once its file is lost it is Failed (Lost). A snapshot of a disk being resized waits for the resize. When the VM stops, the
// resize happens, then the waiting snapshots are taken (consistent true, at the new
// size), and the waiting disk is restored.
func TestDiskSnapshotOfRunningVM(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	waitDisk(t, ns, "root", v1alpha2.ImageReady)
	createAll(t, newVM(ns, "vm", "root", v1alpha2.Manual))
	waitPhase(t, ns, "vm", v1alpha2.MachineStopped)
	createAll(t, newOp(ns, "start", "vm", v1alpha2.OpStart))
	pod := waitPod(t, ns, "vm")
	runPod(t, &pod, "n1")
	waitPhase(t, ns, "vm", v1alpha2.MachineRunning)

	createAll(t, newSnapshot(ns, "strict", "root", true), newSnapshot(ns, "loose", "root", false))
	strict := waitSnapshot(t, ns, "strict", v1alpha2.SnapshotPending, v1alpha2.ReasonSnapshotPotentiallyInconsistent,
		"VM vm", "qemu-guest-agent", "Stopped", "requiredConsistency: false")
	if strict.Status.Consistent != nil {
		t.Errorf("a pending snapshot has consistent %s", consistent(strict))
	}
	loose := waitSnapshot(t, ns, "loose", v1alpha2.SnapshotReady, v1alpha2.ReasonSnapshotReady, "while VM vm runs")
	if consistent(loose) != "false" {
		t.Errorf("a snapshot taken under a running VM has consistent %s, want false", consistent(loose))
	}
	if size, backing := qemuInfo(t, storage.SnapshotPath(storageDir, loose)); size != 1<<20 || backing != "" {
		t.Errorf("the running VM's disk snapshot: %d bytes backed by %q; want 1Mi, standalone", size, backing)
	}
	// A Ready snapshot whose file is gone says so.
	if err := os.Remove(storage.SnapshotPath(storageDir, loose)); err != nil {
		t.Fatal(err)
	}
	orig := loose.DeepCopy()
	loose.Annotations = map[string]string{"test": "look-again"}
	if err := k8s.Patch(ctx, loose, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, ns, "loose", v1alpha2.SnapshotFailed, v1alpha2.ReasonSnapshotLost, "file is gone")

	waiting := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "waiting"},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: refSource(v1alpha2.VirtualDiskSnapshotKind, "strict", "")}}
	createAll(t, waiting)
	eventually(t, timeout, "the disk waits for its snapshot", func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(waiting), waiting)
		msg := imageReadyMessage(waiting.Status.Conditions)
		return waiting.Status.Phase == v1alpha2.ImagePending && strings.Contains(msg, "VirtualDiskSnapshot "+ns+"/strict to be Ready (it is Pending") &&
			strings.Contains(msg, "requiredConsistency: false"), fmt.Sprintf("%s %s", waiting.Status.Phase, msg)
	})

	// A resize waits for the VM to stop; a snapshot waits for the resize.
	if err := setDiskSize(t, ns, "root", "2Mi"); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the disk is Resizing", func() (bool, string) {
		var d v1alpha2.VirtualDisk
		_ = k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "root"}, &d)
		c := meta.FindStatusCondition(d.Status.Conditions, v1alpha2.DiskConditionResizing)
		return c != nil && c.Status == metav1.ConditionTrue, fmt.Sprintf("%+v", c)
	})
	createAll(t, newSnapshot(ns, "during-resize", "root", false))
	waitSnapshot(t, ns, "during-resize", v1alpha2.SnapshotPending, v1alpha2.ReasonSnapshotWaitingForDisk, "being resized")
	if _, err := os.Stat(storage.SnapshotPath(storageDir, strict)); !os.IsNotExist(err) {
		t.Errorf("a pending snapshot has a file: %v", err)
	}

	// The guest powers off (runPolicy Manual keeps it off).
	setPodStatus(t, &pod, corev1.PodFailed, false)
	waitPhase(t, ns, "vm", v1alpha2.MachineStopped)
	waitResized(t, ns, "root", 2<<20)
	for _, name := range []string{"strict", "during-resize"} {
		s := waitSnapshot(t, ns, name, v1alpha2.SnapshotReady, v1alpha2.ReasonSnapshotReady, "no running VM")
		if consistent(s) != "true" {
			t.Errorf("snapshot %s of a stopped VM's disk has consistent %s, want true", name, consistent(s))
		}
		if size, _ := qemuInfo(t, storage.SnapshotPath(storageDir, s)); size != 2<<20 {
			t.Errorf("snapshot %s taken after the resize is %d bytes, want 2Mi", name, size)
		}
	}
	if d := waitDisk(t, ns, "waiting", v1alpha2.ImageReady); d.Status.Capacity != "2Mi" {
		t.Errorf("the disk restored once its snapshot was taken has capacity %s, want 2Mi", d.Status.Capacity)
	}
}

// applyGuideManifest creates the objects of a manifest of the guide suite
// (test/e2e/testdata/guide) in ns, as written.
func applyGuideManifest(t *testing.T, ns, name string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "test", "e2e", "testdata", "guide", name))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		u.SetNamespace(ns)
		if err := k8s.Create(ctx, u); err != nil {
			t.Fatalf("%s does not apply: %v", name, err)
		}
	}
}

// TestGuideDiskSnapshotManifests: the user guide's snapshot of a running VM's root disk
// (requiredConsistency true) is accepted and waits, saying why, while the VM runs; it is
// taken once the VM is Stopped (CONSISTENT true). The guide's recovery manifest then
// makes the disk again, 10Gi, from the snapshot (after the disk was lost).
func TestGuideDiskSnapshotManifests(t *testing.T) {
	ns := newNamespace(t)
	vd := blankDisk(t, ns, "linux-vm-root", "64Mi")
	if err := qemuIO(t, vd.Status.Path, "write -P 0x42 1M 64k"); err != nil {
		t.Fatal(err)
	}
	createAll(t, newVM(ns, "linux-vm", "linux-vm-root", v1alpha2.Manual))
	waitPhase(t, ns, "linux-vm", v1alpha2.MachineStopped)
	createAll(t, newOp(ns, "start", "linux-vm", v1alpha2.OpStart))
	pod := waitPod(t, ns, "linux-vm")
	runPod(t, &pod, "n1")
	waitPhase(t, ns, "linux-vm", v1alpha2.MachineRunning)

	applyGuideManifest(t, ns, "25-vdsnapshot.yaml")
	const name = "linux-vm-root-1728027905"
	waitSnapshot(t, ns, name, v1alpha2.SnapshotPending, v1alpha2.ReasonSnapshotPotentiallyInconsistent, "Stopped", "requiredConsistency: false")
	setPodStatus(t, &pod, corev1.PodFailed, false)
	waitPhase(t, ns, "linux-vm", v1alpha2.MachineStopped)
	if s := waitSnapshot(t, ns, name, v1alpha2.SnapshotReady, v1alpha2.ReasonSnapshotReady); consistent(s) != "true" {
		t.Errorf("the guide's snapshot of a stopped VM's disk: consistent %s", consistent(s))
	}
	// `d8 k get vdsnapshot`, as the guide shows it (the apiserver's Table: see printed).
	out := printed(t, ns, "virtualdisksnapshots", "")
	t.Logf("get vdsnapshot:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME PHASE CONSISTENT AGE" ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), name+" Ready true ") {
		t.Errorf("kubectl get vdsnapshot prints\n%s", out)
	}

	// The disk is lost (the VM and the disk deleted); the guide's manifest makes it again.
	deleteVM(t, ns, "linux-vm")
	if err := k8s.Delete(ctx, vd); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the disk gone", func() (bool, string) {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(vd), &v1alpha2.VirtualDisk{})
		return client.IgnoreNotFound(err) == nil && err != nil, fmt.Sprint(err)
	})
	applyGuideManifest(t, ns, "26-vd-from-snapshot.yaml")
	rd := waitDisk(t, ns, "linux-vm-root", v1alpha2.ImageReady)
	if rd.Status.Capacity != "10Gi" {
		t.Errorf("the recovered disk has capacity %s, want the guide's 10Gi", rd.Status.Capacity)
	}
	if err := qemuIO(t, rd.Status.Path, "read -P 0x42 1M 64k"); err != nil {
		t.Errorf("the recovered disk lacks the data written before the snapshot: %v", err)
	}
}
