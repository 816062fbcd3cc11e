// Package vm is the VirtualMachine controller. It owns a VM's launcher pods, its hold on
// its disks and its address lease, applies the VM's runPolicy when a pod ends, and derives
// the VM's phase and conditions. It does not run QEMU (the launcher does), choose nodes
// (the scheduler does) or move VMs between nodes (the migration controller does).
package vm
