// Package vm is the VirtualMachine controller. It owns a VM's launcher pods, its hold on
// its disks and the VirtualMachineIPAddress it uses (one it makes for itself unless its
// spec names one; package ipaddress binds it to a lease and attaches it), applies the VM's
// runPolicy when a pod ends, and derives the VM's phase and conditions. It builds the
// launcher pod from the VM's spec (its machine: osType, bootloader, paravirtualization,
// boot order; its placement and labels), tells which changes of a running VM's spec await a
// restart (restarting it when its restartApprovalMode is Automatic), and asks for a live
// migration (an Evict operation) when the VM's node no longer fits its placement. It does
// not run QEMU (the launcher does), choose nodes (the scheduler does) or move VMs between
// nodes (the migration controller does).
//
// Its admission webhooks: Defaulter (mutating, on creation) names the default class in a VM
// that names none; Webhook (validating) refuses a VM its class's sizing policies or the
// address range do not allow.
package vm
