// Package ipam hands out VM addresses from the configured range. A lease is a
// cluster-scoped VirtualMachineIPAddressLease named after the address, so the apiserver's
// name uniqueness is what guarantees that no address is ever held twice, across
// controller restarts and replicas alike. This package does not touch pods or nodes.
package ipam
