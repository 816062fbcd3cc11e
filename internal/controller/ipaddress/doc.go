// Package ipaddress is the controller of VirtualMachineIPAddress (vmip) and
// VirtualMachineIPAddressLease (vmipl), as Deckhouse has them.
//
// A vmip asks for an address of the VM range: type Auto takes a free one, type Static
// exactly spec.staticIP. It is Bound when it holds a lease: a cluster-scoped
// VirtualMachineIPAddressLease named after the address (ip-10-66-10-14), so the
// apiserver's name uniqueness is what keeps an address from being held twice, across
// controller restarts and replicas alike. It is Attached when a VM of its namespace uses
// it; one VM at a time does, and the first to use it keeps it while it exists.
//
// A lease is Bound while the vmip its spec names exists; otherwise Released, when it keeps
// its namespace for a retention time (Deckhouse: 10 minutes) so that the namespace can
// take the address back, and is then deleted.
//
// The VM controller (package vm) makes a vmip for a VM that names none and reads the
// vmip's status; this package never writes a VM. Leases of Ferry's releases before vmip
// (labelled with their VM's UID, LabelLegacyLeaseHolder) are taken over by the vmip made
// for that VM, so an upgrade keeps every VM's address.
package ipaddress
