// Package usbdevice is the controller of NodeUSBDevice and USBDevice, Deckhouse's USB
// passthrough kinds, on a cluster that has no USB passthrough.
//
// On Deckhouse a DRA driver on each node publishes the USB devices it finds, and one
// NodeUSBDevice is made per device. Ferry does not discover USB devices on nodes (it has
// no USB passthrough), so a NodeUSBDevice exists only when someone makes it, and it is
// what Deckhouse's is for a device absent on every host: Ready False (NotFound), with a
// message that says why. Its assignment works as Deckhouse's does: with
// spec.assignedNamespace set, a USBDevice of the same name is made in that namespace,
// controlled by the NodeUSBDevice (an owner reference; a namespaced object may have a
// cluster-scoped owner), and Assigned is True; unassigned, reassigned or deleted, the
// USBDevice goes (this controller deletes it: the garbage collector may not run). A
// USBDevice of that name that is not Ferry's (no owner reference to the NodeUSBDevice)
// is never overwritten: Assigned says so.
//
// A USBDevice's Ready follows its NodeUSBDevice's (NotFound); Attached is False: no VM
// can have the device. A VM that names it in spec.usbDevices does not start (package
// vm), and the USBDevice's Attached message names the VMs that wait for it.
//
// Each kind's status has one writer, its reconciler here, which writes it with Update
// (the resourceVersion it read: a conflict requeues) and only when it changed. Ferry
// reads no namespace: a namespace that does not exist shows as the USBDevice's create
// failing, and is looked at again every NamespaceRecheck.
package usbdevice
