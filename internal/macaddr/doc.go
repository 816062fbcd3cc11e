// Package macaddr reads, checks and allocates the MAC addresses of VMs' interfaces
// (VirtualMachineMACAddress), with no I/O: the controller (package
// controller/macaddress) and the webhooks use it.
//
// An allocated address is in the cluster's prefix: three octets derived from the
// cluster's identity (the UID of namespace kube-system), with the first octet locally
// administered and unicast (its two lowest bits 1 and 0: x2, x6, xA or xE, the ranges
// Deckhouse's user guide names), then three random octets. Locally administered addresses
// are never assigned to hardware by the IEEE, so no NIC's burned-in address can collide
// with one; a prefix per cluster keeps two clusters on one segment apart. 02:66 is left
// out: Ferry's releases before VirtualMachineMACAddress derived a VM's MAC from its IPv4
// address as 02:66:<address> (vmnet.GuestMAC), and such VMs keep theirs.
//
// A lease (VirtualMachineMACAddressLease) is named after its address,
// mac-5e-e6-19-22-0f-d8, so that the apiserver's name uniqueness keeps an address unique
// in the cluster. Parsing is by hand: net.ParseMAC also takes 8- and 20-octet forms and
// dotted ones, which the schema refuses; the rules here are the schema's, so that what the
// apiserver admits this package reads the same way.
package macaddr
