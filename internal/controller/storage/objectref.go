package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// refNamespace is the namespace of the object an objectRef names, for an object in ns:
// a ClusterVirtualImage has none; a ClusterVirtualImage's ref says it (objectRef.namespace),
// a VirtualImage's or VirtualDisk's ref is to its own namespace (a VirtualImage, a
// VirtualDisk or a VirtualDiskSnapshot).
func refNamespace(ns string, ref v1alpha2.ObjectRefSource) string {
	switch {
	case ref.Kind == v1alpha2.ClusterVirtualImageKind:
		return ""
	case ns == "":
		return ref.Namespace
	}
	return ns
}

// refObject is an empty object of the kind an objectRef names.
func refObject(kind string) (client.Object, error) {
	switch kind {
	case v1alpha2.ClusterVirtualImageKind:
		return &v1alpha2.ClusterVirtualImage{}, nil
	case v1alpha2.VirtualImageKind:
		return &v1alpha2.VirtualImage{}, nil
	case v1alpha2.VirtualDiskKind:
		return &v1alpha2.VirtualDisk{}, nil
	case v1alpha2.VirtualDiskSnapshotKind:
		return &v1alpha2.VirtualDiskSnapshot{}, nil
	}
	return nil, permanent("dataSource.objectRef.kind %q is not supported", kind)
}

// readyRef reads the object an objectRef names and waits until it is Ready (a snapshot:
// until it can be read, see snapshotUsable).
func readyRef(ctx context.Context, c client.Client, ns string, ref v1alpha2.ObjectRefSource) (client.Object, error) {
	obj, err := refObject(ref.Kind)
	if err != nil {
		return nil, err
	}
	key := client.ObjectKey{Namespace: refNamespace(ns, ref), Name: ref.Name}
	if ref.Kind != v1alpha2.ClusterVirtualImageKind && key.Namespace == "" {
		return nil, permanent("dataSource.objectRef.namespace is required for a %s", ref.Kind)
	}
	name := ref.Kind + " " + key.String()
	if err := c.Get(ctx, key, obj); err != nil {
		return nil, waiting(v1alpha2.ReasonSourceNotReady, "source %s: %v", name, err)
	}
	if s, ok := obj.(*v1alpha2.VirtualDiskSnapshot); ok {
		if !snapshotUsable(s) {
			return nil, waiting(v1alpha2.ReasonSourceNotReady, "waiting for the source %s to be Ready (it is %s%s)", name, snapshotPhaseOr(s.Status.Phase), snapshotWhy(s))
		}
		return obj, nil
	}
	st := obj.(importable).ImportState()
	if st.Phase != v1alpha2.ImageReady {
		why := readyMessage(st.Conditions, "")
		if why != "" {
			why = ": " + why
		}
		return nil, waiting(v1alpha2.ReasonSourceNotReady, "waiting for the source %s to be Ready (it is %s%s)", name, phaseOr(st.Phase), why)
	}
	if d, ok := obj.(*v1alpha2.VirtualDisk); ok && len(d.Status.AttachedToVirtualMachines) > 0 {
		return nil, waiting(v1alpha2.ReasonSourceNotReady, "the source %s is attached to VM %s: an image is made from a disk no VM uses (delete the VM, or take the disk out of its blockDeviceRefs)", name, d.Status.AttachedToVirtualMachines[0].Name)
	}
	return obj, nil
}

func phaseOr(p v1alpha2.ImagePhase) string {
	if p == "" {
		return string(v1alpha2.ImagePending)
	}
	return string(p)
}

// openObject opens the file of the image or disk an objectRef names, for an object in
// ns. The file is found from the source's identity under the storage, never from its
// status. A disk, a qcow2 overlay of its image, is flattened into a temporary file
// first: an image holds all its data.
func (im importer) openObject(ctx context.Context, ns string, ref v1alpha2.ObjectRefSource) (io.ReadCloser, int64, error) {
	obj, err := readyRef(ctx, im.client, ns, ref)
	if err != nil {
		return nil, 0, err
	}
	switch o := obj.(type) {
	case *v1alpha2.ClusterVirtualImage:
		return openFile(ImagePath(im.root, o.Name))
	case *v1alpha2.VirtualImage:
		return openFile(VirtualImagePath(im.root, o))
	case *v1alpha2.VirtualDisk:
		return flattenDisk(ctx, im.root, DiskPath(im.root, o))
	case *v1alpha2.VirtualDiskSnapshot:
		// A snapshot's file is a standalone qcow2 Ferry wrote; the import checks it again.
		return openFile(SnapshotPath(im.root, o))
	}
	return nil, 0, permanent("dataSource.objectRef.kind %q is not supported", ref.Kind)
}

// sourceUID is the UID of the object an ObjectRef source names, for status.sourceUID.
func sourceUID(ctx context.Context, c client.Client, ns string, ds v1alpha2.DataSource) types.UID {
	if ds.Type != v1alpha2.SourceObjectRef || ds.ObjectRef == nil {
		return ""
	}
	obj, err := refObject(ds.ObjectRef.Kind)
	if err != nil {
		return ""
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: refNamespace(ns, *ds.ObjectRef), Name: ds.ObjectRef.Name}, obj); err != nil {
		return ""
	}
	return obj.GetUID()
}

// flattenDisk copies a disk Ferry made (a qcow2 file, an overlay of an image of the
// storage or standalone) into a temporary standalone qcow2 file, which is removed when
// the returned reader is closed. The disk's backing chain is checked first: every file
// in it must be an image of the storage, as the disk controller makes them.
func flattenDisk(ctx context.Context, root, path string) (io.ReadCloser, int64, error) {
	if err := checkDiskChain(ctx, root, path); err != nil {
		return nil, 0, permanentError{err}
	}
	dir := filepath.Join(root, "tmp")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, 0, err
	}
	f, err := os.CreateTemp(dir, "flatten-*.qcow2")
	if err != nil {
		return nil, 0, err
	}
	f.Close()
	if err := copyDisk(ctx, path, f.Name(), true); err != nil {
		os.Remove(f.Name())
		return nil, 0, err
	}
	rc, size, err := openFile(f.Name())
	if err != nil {
		os.Remove(f.Name())
		return nil, 0, err
	}
	return removeOnClose{rc, f.Name()}, size, nil
}

// copyDisk writes the disk at path, with whatever image it is an overlay of, into dst as
// one standalone qcow2 file. With shared, the disk is read even if a QEMU holds it open
// for writing (-U), so the copy may be torn; without, qemu-img takes QEMU's image locks
// and refuses a disk some QEMU writes, and no QEMU can open it for writing during the
// copy.
func copyDisk(ctx context.Context, path, dst string, shared bool) error {
	args := []string{"convert", "-q"}
	if shared {
		args = append(args, "-U")
	}
	args = append(args, "-f", FormatQcow2, "-O", FormatQcow2, "-o", "cluster_size=65536", path, dst)
	if _, err := run(ctx, "qemu-img", args...); err != nil {
		return fmt.Errorf("copying the disk: %w", err)
	}
	return nil
}

type removeOnClose struct {
	io.ReadCloser
	path string
}

func (r removeOnClose) Close() error {
	err := r.ReadCloser.Close()
	os.Remove(r.path)
	return err
}

// checkDiskChain refuses a disk whose backing chain holds anything but the disk itself
// and, below it, one image file of the storage (images/ or virtualimages/).
func checkDiskChain(ctx context.Context, root, path string) error {
	out, err := run(ctx, "qemu-img", "info", "-U", "-f", FormatQcow2, "--backing-chain", "--output=json", path)
	if err != nil {
		return err
	}
	var chain []qemuInfo
	if err := json.Unmarshal(out, &chain); err != nil {
		return fmt.Errorf("reading qemu-img info: %w", err)
	}
	for i, layer := range chain {
		if layer.FullBackingFilename == "" && layer.BackingFilename == "" {
			if i != len(chain)-1 {
				return fmt.Errorf("the disk's backing chain is inconsistent")
			}
			continue
		}
		if i > 0 {
			return fmt.Errorf("the disk's image has a backing file (%s): a disk is backed by one image at most", layer.BackingFilename)
		}
		b := filepath.Clean(layer.FullBackingFilename)
		if !within(filepath.Join(root, "images"), b) && !within(filepath.Join(root, "virtualimages"), b) {
			return fmt.Errorf("the disk's backing file %s is not an image of the storage", b)
		}
	}
	return nil
}
