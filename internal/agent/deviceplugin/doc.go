// Package deviceplugin offers the node's /dev/net/tun and /dev/kvm to the kubelet as
// extended resources (v1alpha2.ResourceTun, v1alpha2.ResourceKVM), through the kubelet's
// device plugin API (v1beta1), as KubeVirt's node agent does. A launcher pod that requests
// one gets the device node in its container (created by the container runtime, allowed in
// the container's device cgroup), so it need not be privileged.
//
// Each resource is a gRPC server on a socket of its own in the kubelet's device-plugins
// directory, registered with the kubelet's socket there (kubelet.sock). The kubelet
// removes every plugin socket when it starts and makes a new kubelet.sock: the plugin
// checks both every second and serves and registers again when either changed.
//
// The devices are shared: one device node serves every container, so a resource has as
// many units (device IDs) as the node may run launcher pods, and Allocate gives the same
// device to each. The package touches nothing but its sockets.
package deviceplugin
