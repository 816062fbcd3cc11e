package v1alpha2

// Extended resources of the node agent's device plugin (package agent/deviceplugin): a
// launcher pod that requests one gets the device node in its container, allowed in its
// device cgroup, without being privileged. A node advertises as many units as it may run
// launcher pods; a unit is a container's access, not a device of its own.
const (
	// ResourceTun is /dev/net/tun, from which a launcher creates its VM's tap.
	ResourceTun = "devices.virtualization.ferryvm.io/tun"
	// ResourceKVM is /dev/kvm, offered only where KVM can run guests.
	ResourceKVM = "devices.virtualization.ferryvm.io/kvm"
)
