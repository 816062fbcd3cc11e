package vmsnapshot

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// SavedVM is the VM as the snapshot found it.
type SavedVM struct {
	Name string                      `json:"name"`
	UID  types.UID                   `json:"uid"`
	Spec v1alpha2.VirtualMachineSpec `json:"spec"`
}

// SavedDisk is one disk of the VM and the disk snapshot of its contents.
type SavedDisk struct {
	Name                    string                   `json:"name"`
	Spec                    v1alpha2.VirtualDiskSpec `json:"spec"`
	VirtualDiskSnapshotName string                   `json:"virtualDiskSnapshotName"`
}

// SavedAddress is the VM's VirtualMachineIPAddress and the address it held.
type SavedAddress struct {
	Name    string `json:"name"`
	Address string `json:"address,omitempty"`
}

// Content is what a VM snapshot's Secret holds.
type Content struct {
	VM      SavedVM
	Disks   []SavedDisk
	Address *SavedAddress
}

// SecretName is the name of a VM snapshot's Secret.
func SecretName(snapshot string) string {
	return "vmsnapshot-" + snapshot
}

// DiskSnapshotName is the name of the disk snapshot a VM snapshot takes of a disk.
func DiskSnapshotName(snapshot, disk string) string {
	return snapshot + "-" + disk
}

// Encode writes the content into a Secret's data.
func (c Content) Encode() (map[string][]byte, error) {
	data := map[string][]byte{}
	var err error
	if data[v1alpha2.VMSnapshotSecretVM], err = json.Marshal(c.VM); err != nil {
		return nil, err
	}
	if data[v1alpha2.VMSnapshotSecretDisks], err = json.Marshal(c.Disks); err != nil {
		return nil, err
	}
	if c.Address != nil {
		if data[v1alpha2.VMSnapshotSecretIPAddress], err = json.Marshal(c.Address); err != nil {
			return nil, err
		}
	}
	return data, nil
}

// Decode reads a VM snapshot's Secret. A tenant can edit the Secret, so what it holds is
// input: a Secret that does not parse, or names no VM, is refused with what is wrong.
func Decode(s *corev1.Secret) (Content, error) {
	var c Content
	if err := json.Unmarshal(s.Data[v1alpha2.VMSnapshotSecretVM], &c.VM); err != nil {
		return c, fmt.Errorf("Secret %s: key %s does not hold a VM: %v", s.Name, v1alpha2.VMSnapshotSecretVM, err)
	}
	if c.VM.Name == "" {
		return c, fmt.Errorf("Secret %s: key %s names no VM", s.Name, v1alpha2.VMSnapshotSecretVM)
	}
	if err := json.Unmarshal(s.Data[v1alpha2.VMSnapshotSecretDisks], &c.Disks); err != nil {
		return c, fmt.Errorf("Secret %s: key %s does not hold a list of disks: %v", s.Name, v1alpha2.VMSnapshotSecretDisks, err)
	}
	for _, d := range c.Disks {
		if d.Name == "" || d.VirtualDiskSnapshotName == "" {
			return c, fmt.Errorf("Secret %s: a disk of key %s lacks its name or its virtualDiskSnapshotName", s.Name, v1alpha2.VMSnapshotSecretDisks)
		}
	}
	if b, ok := s.Data[v1alpha2.VMSnapshotSecretIPAddress]; ok {
		c.Address = &SavedAddress{}
		if err := json.Unmarshal(b, c.Address); err != nil || c.Address.Name == "" {
			return c, fmt.Errorf("Secret %s: key %s does not name a VirtualMachineIPAddress: %v", s.Name, v1alpha2.VMSnapshotSecretIPAddress, err)
		}
	}
	return c, nil
}
