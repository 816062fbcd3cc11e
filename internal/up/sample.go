package up

import (
	"context"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/guestimage"
)

// Sample object names: the seed's VM is called linux-vm.
const (
	SampleImage = "ferry-guest"
	SampleDisk  = "linux-vm-root"
	SampleVM    = "linux-vm"
)

// ensureSample creates the sample image, disk and VM on the first start of a state
// directory only: a user who deleted them does not get them back.
// url, if not "", is where the cluster reads the image (the guest image file, served);
// otherwise its file.
func ensureSample(ctx context.Context, c client.Client, stateDir string, url func(path string) (string, error), say func(string, ...any)) error {
	marker := filepath.Join(stateDir, "sample-created")
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	say("Building the guest image…")
	img, err := guestimage.Ensure(ctx, filepath.Join(stateDir, "guest"))
	if err != nil {
		return err
	}
	src := "file://" + img
	if url != nil {
		if src, err = url(img); err != nil {
			return err
		}
	}
	for _, obj := range SampleObjects(src, metav1.NamespaceDefault) {
		if err := c.Create(ctx, obj); client.IgnoreAlreadyExists(err) != nil {
			return err
		}
	}
	say("Created the sample VM %s (ClusterVirtualImage %s, VirtualDisk %s)", SampleVM, SampleImage, SampleDisk)
	return os.WriteFile(marker, nil, 0o644)
}

// SampleObjects are a boot image from imageURL, a disk made from it and a small VM that
// boots from that disk.
func SampleObjects(imageURL, namespace string) []client.Object {
	return []client.Object{
		&v1alpha2.ClusterVirtualImage{
			ObjectMeta: metav1.ObjectMeta{Name: SampleImage},
			Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{
				Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: imageURL},
			}},
		},
		&v1alpha2.VirtualDisk{
			ObjectMeta: metav1.ObjectMeta{Name: SampleDisk, Namespace: namespace},
			Spec: v1alpha2.VirtualDiskSpec{
				DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceObjectRef,
					ObjectRef: &v1alpha2.ObjectRefSource{Kind: "ClusterVirtualImage", Name: SampleImage}},
			},
		},
		&v1alpha2.VirtualMachine{
			ObjectMeta: metav1.ObjectMeta{Name: SampleVM, Namespace: namespace},
			Spec: v1alpha2.VirtualMachineSpec{
				RunPolicy:           v1alpha2.AlwaysOnUnlessStoppedManually,
				LiveMigrationPolicy: v1alpha2.PreferSafe,
				CPU:                 v1alpha2.CPUSpec{Cores: 1},
				Memory:              v1alpha2.MemorySpec{Size: resource.MustParse("128Mi")},
				BlockDeviceRefs:     []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.DiskDevice, Name: SampleDisk}},
			},
		},
	}
}
