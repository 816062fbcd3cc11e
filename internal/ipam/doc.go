// Package ipam is the VM address ranges and the names of address leases: which addresses
// of the configured ranges (a list, as Deckhouse's virtualMachineCIDRs) may be given to
// VMs (not a range's network, gateway or broadcast address), in which order, which range's
// gateway and prefix length a VM's address gets, and the name of the cluster-scoped
// VirtualMachineIPAddressLease of each (ip-10-66-10-14, as Deckhouse names them), which
// reads back as the address. The apiserver's name uniqueness on those leases is what
// guarantees that no address is ever held twice (package controller/ipaddress takes them).
// This package touches no object.
package ipam
