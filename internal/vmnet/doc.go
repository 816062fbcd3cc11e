// Package vmnet gives a VM its network on a node: a tap device for its virtio NIC, the
// route to its address, a DHCP answer with that address, and the announcement that moves
// the address to the node the VM runs on.
//
// The model is routed, with the node as the guest's first hop (as Calico does for pods):
//
//   - Every VM's tap carries the same MAC (TapMAC) and answers the guest's ARP for any
//     other address by proxy, so the guest's neighbour entry for its gateway stays right
//     when the VM moves to another node.
//   - The node that runs the VM holds a /32 route to its address through the tap and a
//     proxy-ARP entry for it on the uplink (the interface of the VM range's on-link route).
//     Every other station on that link (the router, the other nodes) reaches the address
//     through this node.
//   - When the guest starts to run on a node (cold start, or the switchover of a live
//     migration), Attach installs both and sends gratuitous ARPs on the uplink, so the
//     stations there move their entry for the address to this node at once. The source of
//     a migration gives the address up (Detach) as soon as its guest has left.
//
// The guest is the tenant's, so each tap is guarded (guard.go): an nftables netdev table
// with an ingress hook on the tap, made by netlink when the tap is opened, drops whatever
// the guest sends from another MAC or IPv4 address than its own (DHCP from 0.0.0.0 and
// ARP probes aside), IPv6 and every other protocol, and counts it.
//
// The tap is opened by the launcher and handed to QEMU as a file descriptor; it is not
// persistent, so it and its route vanish when QEMU dies. PrepareNode sets the node-wide
// part once (forwarding, no proxy-ARP delay, the VM range on-link on the uplink).
package vmnet
