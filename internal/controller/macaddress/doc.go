// Package macaddress is the controller of VirtualMachineMACAddress (vmmac) and
// VirtualMachineMACAddressLease (vmmacl), as Deckhouse has them, following package
// ipaddress's design.
//
// A vmmac asks for a MAC address: spec.address exactly (static), or, left empty, a free
// one in the cluster's prefix (package macaddr). It is Bound when it holds a lease: a
// cluster-scoped VirtualMachineMACAddressLease named after the address
// (mac-5e-e6-19-22-0f-d8), so the apiserver's name uniqueness keeps an address from being
// held twice, in any namespace, across controller restarts and replicas alike. A static
// address whose lease another vmmac holds is not bound, and its Bound condition says who
// holds it (VirtualMachineMACAddressLeaseAlreadyExists). It is Attached when a VM of its
// namespace uses it; one VM at a time does, and the first to use it keeps it while it
// exists. Its finalizer keeps it while a VM uses it; deleted, it deletes its lease.
//
// A lease is Bound while the vmmac it names exists and asks for its address. Deckhouse's
// MAC leases have no Released phase: a lease whose vmmac is gone is deleted (the vmmac
// deletes it; this package's lease controller is the backstop).
//
// Ferry gives a VM one interface, on the main network, and it is the one that gets a
// vmmac's address (Deckhouse's main interface takes its MAC from its pod network, and
// vmmacs serve its additional networks, which Ferry does not have). The VM controller
// (package vm) makes a vmmac for a VM that names none in spec.networks and reads the
// vmmac's status; this package never writes a VM.
package macaddress
