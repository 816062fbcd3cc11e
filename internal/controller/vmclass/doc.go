// Package vmclass is the VirtualMachineClass controller and what a class means for its VMs.
//
// The controller owns the classes' status (phase, availableNodes, cpuFeatures,
// maxAllocatableResources, conditions Ready, Discovered and InUse), keeps a class while VMs
// use it (a finalizer), and creates the class "generic" once, at the first start of Ferry
// (as Deckhouse's installer does), never again: an administrator may edit or delete it.
//
// The pure functions are what the VM, migration and evacuation controllers and the VM
// webhook share: Sizing (does a VM fit its class's sizing policies, and if not, what to
// set), Effective (the VM as its class completes it: placement merged, coreFraction
// defaulted) and CPUOf (the QEMU CPU a class gives, comparable, and as launcher flags).
// The default class (defaultclass.go): DefaultFor, the class a VM created without one gets
// (the VM package's mutating webhook writes it), and the webhook that keeps one class at
// most annotated is-default-class=true.
//
// The package does not write VMs or pods.
package vmclass
