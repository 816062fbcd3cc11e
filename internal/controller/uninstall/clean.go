package uninstall

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// CRDs are Ferry's own CRDs, which Clean deletes. (deploy/base's NodeGroup CRD is
// Deckhouse's API, which Ferry reads; kubectl delete -k removes it.)
var CRDs = []string{"virtualmachinepools.virtualization.deckhouse.io", CRDVirtualMachines, CRDOperations, CRDDisks, CRDImages, CRDVirtualImages, CRDIPAddresses, CRDAttachments, CRDSnapshots, "virtualmachinesnapshots.virtualization.deckhouse.io", "virtualmachinesnapshotoperations.virtualization.deckhouse.io", "virtualmachineipaddressleases.virtualization.deckhouse.io", CRDMACAddresses, "virtualmachinemacaddressleases.virtualization.deckhouse.io", CRDUSBDevices, CRDNodeUSBDevices, CRDClasses}

// Options configure Clean.
type Options struct {
	// ControllerNamespace holds the controller's leader Lease, ferry-controller: a Lease
	// renewed lately says a controller runs.
	ControllerNamespace string
	// DeleteData deletes the disks, images and disk snapshots before the CRDs, so that the
	// controller removes their files; without it their files stay in the shared storage.
	DeleteData bool
	// Force goes on without a running controller (or past its timeout): Ferry's finalizers
	// are removed by Clean itself. VMs then stop as their launcher pods are
	// garbage-collected; no file is removed.
	Force bool
	// Timeout bounds each wait for the controller (VMs stopping, CRDs going).
	Timeout time.Duration
	Out     io.Writer
}

// step is one kind of Ferry's objects that Clean deletes and waits for.
type step struct {
	what string
	list func() client.ObjectList
}

// Clean removes Ferry's objects and CRDs (see the package doc).
func Clean(ctx context.Context, c client.Client, o Options) error {
	say := func(format string, args ...any) { fmt.Fprintf(o.Out, format+"\n", args...) }
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	running, why := controllerRunning(ctx, c, o.ControllerNamespace)
	switch {
	case running:
		say("The Ferry controller runs (%s): it stops and releases each object.", why)
	case o.Force:
		say("The Ferry controller does not run (%s): removing Ferry's finalizers here (--force); VMs stop as their launcher pods are garbage-collected.", why)
	default:
		return fmt.Errorf("the Ferry controller does not run (%s): it stops the VMs and releases their addresses before they go. Start it again, or pass --force to remove Ferry's finalizers here instead (VMs then stop as their launcher pods are garbage-collected; disk and image files stay)", why)
	}
	steps := []step{
		// Pools first: a pool would make its deleted replicas again.
		{"VirtualMachinePools", func() client.ObjectList { return &v1alpha2.VirtualMachinePoolList{} }},
		{"VirtualMachines", kinds[0].list},
		{"VirtualMachineOperations", kinds[1].list},
	}
	if o.DeleteData {
		steps = append(steps, step{"VirtualDisks (and their files)", kinds[2].list}, step{"ClusterVirtualImages (and their files)", kinds[3].list},
			step{"VirtualImages (and their files)", kinds[4].list},
			step{"VirtualDiskSnapshots (and their files)", func() client.ObjectList { return &v1alpha2.VirtualDiskSnapshotList{} }})
	}
	for _, s := range steps {
		if err := deleteAll(ctx, c, s, running, o, say); err != nil {
			return err
		}
	}

	// The CRDs: the controller releases what is left (disks and images, unless deleted
	// above) keeping their files.
	for _, name := range CRDs {
		crd := &unstructured.Unstructured{}
		crd.SetGroupVersionKind(schema.GroupVersionKind{Group: crdGroupVersionGroup, Version: "v1", Kind: crdKind})
		crd.SetName(name)
		if err := c.Delete(ctx, crd); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting CRD %s: %w", name, err)
		}
	}
	say("Deleted Ferry's CRDs; waiting for them to go (disk and image files stay in the shared storage).")
	gone := func(ctx context.Context) (bool, error) {
		for _, name := range CRDs {
			if err := c.Get(ctx, client.ObjectKey{Name: name}, crdMeta(name)); !apierrors.IsNotFound(err) {
				return false, client.IgnoreNotFound(err)
			}
		}
		return true, nil
	}
	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if !running {
		if err := releaseAll(ctx, c, say); err != nil {
			return err
		}
	}
	err := wait.PollUntilContextCancel(wctx, 500*time.Millisecond, true, gone)
	if err != nil && running && o.Force {
		say("Ferry's CRDs did not go within %s: removing Ferry's finalizers here (--force).", o.Timeout)
		if err := releaseAll(ctx, c, say); err != nil {
			return err
		}
		wctx2, cancel2 := context.WithTimeout(ctx, o.Timeout)
		defer cancel2()
		err = wait.PollUntilContextCancel(wctx2, 500*time.Millisecond, true, gone)
	}
	if err != nil {
		return fmt.Errorf("Ferry's CRDs did not go within %s (%w): %s; run again with --force", o.Timeout, err, leftOver(ctx, c))
	}
	say("Ferry's objects and CRDs are gone: `kubectl delete -k deploy/base --ignore-not-found` removes the rest.")
	return nil
}

// deleteAll deletes every object of s and waits until they are gone: finalized by the
// controller, or released here when it does not run (Force).
func deleteAll(ctx context.Context, c client.Client, s step, running bool, o Options, say func(string, ...any)) error {
	objs, err := listAll(ctx, c, s.list())
	if err == nil && len(objs) == 0 {
		return nil // no CRD, or no object
	}
	if err != nil {
		return fmt.Errorf("listing %s: %w", s.what, err)
	}
	say("Deleting %d %s…", len(objs), s.what)
	for _, obj := range objs {
		if err := c.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting %s %s: %w", s.what, client.ObjectKeyFromObject(obj), err)
		}
	}
	left := func(ctx context.Context) ([]client.Object, error) {
		return listAll(ctx, c, s.list())
	}
	if !running {
		if err := release(ctx, c, left); err != nil {
			return err
		}
	}
	var last []client.Object
	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	err = wait.PollUntilContextCancel(wctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		last, err = left(ctx)
		return err == nil && len(last) == 0, client.IgnoreNotFound(err)
	})
	if err == nil {
		return nil
	}
	if !o.Force {
		return fmt.Errorf("%d %s still there after %s (%s): is the controller stuck? Its log says why; --force removes Ferry's finalizers here", len(last), s.what, o.Timeout, names(last))
	}
	say("%d %s still there after %s: removing Ferry's finalizers here (--force).", len(last), s.what, o.Timeout)
	return release(ctx, c, left)
}

// release removes Ferry's finalizers from the objects left.
func release(ctx context.Context, c client.Client, left func(context.Context) ([]client.Object, error)) error {
	objs, err := left(ctx)
	if err != nil {
		return client.IgnoreNotFound(err)
	}
	for _, obj := range objs {
		if err := Release(ctx, c, obj); err != nil {
			return fmt.Errorf("removing Ferry's finalizers from %s: %w", client.ObjectKeyFromObject(obj), err)
		}
	}
	return nil
}

// releaseAll removes Ferry's finalizers from every object of Ferry's kinds.
func releaseAll(ctx context.Context, c client.Client, say func(string, ...any)) error {
	n := 0
	for _, k := range kinds {
		objs, err := listAll(ctx, c, k.list())
		if err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return err
		}
		for _, obj := range objs {
			if !slices.ContainsFunc(obj.GetFinalizers(), func(f string) bool { return slices.Contains(Finalizers, f) }) {
				continue
			}
			if err := Release(ctx, c, obj); err != nil {
				return fmt.Errorf("removing Ferry's finalizers from %s %s: %w", k.crd, client.ObjectKeyFromObject(obj), err)
			}
			n++
		}
	}
	if n > 0 {
		say("Removed Ferry's finalizers from %d object(s).", n)
	}
	return nil
}

// listAll lists every object of a kind; none when its CRD is gone.
func listAll(ctx context.Context, c client.Client, list client.ObjectList) ([]client.Object, error) {
	if err := c.List(ctx, list); err != nil {
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return nil, nil
		}
		return nil, err
	}
	return metaObjects(list)
}

// leftOver says which of Ferry's CRDs are still there and, for the kinds whose objects
// carry Ferry's finalizers, which objects hold them: the controller's log says why.
func leftOver(ctx context.Context, c client.Client) string {
	var crds, held []string
	for _, name := range CRDs {
		if err := c.Get(ctx, client.ObjectKey{Name: name}, crdMeta(name)); err != nil {
			continue
		}
		crds = append(crds, name)
		for _, k := range kinds {
			if k.crd != name {
				continue
			}
			if objs, err := listAll(ctx, c, k.list()); err == nil && len(objs) > 0 {
				held = append(held, fmt.Sprintf("%s: %s", name, names(objs)))
			}
		}
	}
	if len(crds) == 0 {
		return "objects with Ferry's finalizers were left"
	}
	out := "left: CRDs " + strings.Join(crds, ", ")
	if len(held) > 0 {
		out += "; held by " + strings.Join(held, "; ")
	}
	return out
}

func names(objs []client.Object) string {
	var out []string
	for i, o := range objs {
		if i == 5 {
			out = append(out, "…")
			break
		}
		out = append(out, client.ObjectKeyFromObject(o).String())
	}
	return strings.Join(out, ", ")
}

// controllerRunning tells whether a controller holds its leader Lease, renewed lately.
func controllerRunning(ctx context.Context, c client.Client, namespace string) (bool, string) {
	var l coordinationv1.Lease
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "ferry-controller"}, &l)
	if err != nil {
		return false, fmt.Sprintf("Lease %s/ferry-controller: %v", namespace, err)
	}
	if l.Spec.RenewTime == nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		return false, fmt.Sprintf("Lease %s/ferry-controller has no holder", namespace)
	}
	age := time.Since(l.Spec.RenewTime.Time).Round(time.Second)
	d := 15 * time.Second
	if l.Spec.LeaseDurationSeconds != nil {
		d = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	if age > 2*d {
		return false, fmt.Sprintf("its Lease %s/ferry-controller was last renewed %s ago", namespace, age)
	}
	return true, fmt.Sprintf("%s leads, Lease renewed %s ago", *l.Spec.HolderIdentity, age)
}

func crdMeta(name string) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(schema.GroupVersionKind{Group: crdGroupVersionGroup, Version: "v1", Kind: crdKind})
	m.SetName(name)
	return m
}
