// Package kubelet is the node agent's kubelet role under `ferry up`, where no real kubelet
// runs: it registers the Node, renews its Lease, runs the launcher pods bound to the node
// as processes, reports their status (Ready follows the guest's heartbeat) and finishes
// their deletion. On a real cluster the kubelet does all of this and this package is not
// used. It never changes objects of other nodes.
package kubelet
