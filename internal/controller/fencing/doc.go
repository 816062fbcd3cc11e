// Package fencing restarts the VMs of failed nodes safely. A node of a NodeGroup with
// fencing on arms a watchdog that its agent feeds only after renewing the node's Lease; when
// the Lease has not been renewed for longer than the watchdog timeout plus a margin, the node
// has surely reset itself, and this controller ends its pods and deletes the Node, so that
// the VM controller starts the VMs on other nodes. Nodes without an armed watchdog are never
// fenced: their VMs are only marked as being on an unreachable node.
package fencing
