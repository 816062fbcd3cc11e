// Package controller wires Ferry's controllers into one manager: the `ferry controller`
// process. Each controller lives in its own package below this one and talks to the
// others only through API objects.
//
// # Who writes status
//
// Several controllers write a VirtualMachine's status, and its conditions are one list that
// a JSON merge patch replaces whole: a writer of one condition writes the others as it read
// them. So every status write of a Ferry kind carries the resourceVersion it was computed
// from (client.MergeFromWithOptimisticLock, or an Update): a writer that read a stale copy
// gets a conflict and decides again on a fresh read — its reconcile is requeued, or the
// write is retried on a read past the cache — and never writes over what another wrote
// meanwhile. internal/controller/statuslock's test fails on a status patch without the
// lock. The fields of VirtualMachine.status and their writers:
//
//	field                                  writer (file)                                   on a conflict
//	phase, nodeName, observedGeneration,   VM controller, one patch per reconcile          requeue
//	virtualMachinePods, ipAddress,         (vm/controller.go; Terminating in finalize)
//	virtualMachineIPAddressName,
//	guestOSInfo, interfaces
//	restartCount                           VM controller: the reconcile's patch, and       requeue
//	                                       before a panicked guest's restart (vm/guest.go)
//	conditions Running, Scheduled,         VM controller (vm/status.go, vm/guest.go,       requeue
//	BlockDevicesReady,                     vm/provisioning.go, vm/address.go)
//	VirtualMachineIPAddressReady,
//	AgentReady, ProvisioningReady
//	migrationState                         migration controller (migration/pods.go,        retried on a fresh read,
//	                                       patchVMState); the VM controller only reads it  then requeue
//	condition Migratable                   evacuation controller (evacuation/controller.go) requeue (error back-off)
//	condition EvictionRequired             set by the eviction webhook (evacuation/        retried on a fresh read;
//	                                       webhook.go), removed by the evacuation          requeue (error back-off)
//	                                       controller
//	condition NodeReachable                fencing controller (fencing/vms.go); the VM     marked again within 1 s
//	                                       controller removes it with the VM's last
//	                                       live pod (vm/status.go)
//
// Other kinds:
//
//	VirtualDisk: phase, path, capacity, conditions, observedGeneration — the disk
//	controller (storage/disk.go); attachedToVirtualMachines — the VM controller, attach
//	and detach (vm/disks.go). Both locked; a conflict requeues.
//	ClusterVirtualImage — the image controller alone (storage/image.go): it claims the
//	image with a locked write, and its progress writes that follow patch against its own
//	last write (the one exception statuslock allows).
//	VirtualMachineOperation — by spec.type: Start, Stop, Restart the power controller
//	(power/controller.go), Migrate and Evict the migration controller
//	(migration/controller.go). Locked; a conflict requeues.
//	NodeGroup — the fencing controller (fencing/controller.go). Locked; looked at again
//	within a second.
//	VirtualMachinePool — the pool controller alone (vmpool/status.go), once per reconcile.
//	Locked; a conflict requeues.
//	VirtualMachineIPAddress — the vmip controller alone (ipaddress/controller.go);
//	VirtualMachineIPAddressLease — the lease controller alone (ipaddress/lease.go). Both
//	locked; a conflict requeues (a lease's: its newer version is queued already).
//	NodeUSBDevice — the NodeUSBDevice controller alone (usbdevice/node.go); USBDevice —
//	the USBDevice controller alone (usbdevice/device.go). Both with Status().Update (the
//	resourceVersion read), only when the status changed; a conflict requeues.
package controller
