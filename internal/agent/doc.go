// Package agent is `ferry agent`, the per-node process. Under `ferry up` it plays kubelet
// for its node (package kubelet) and is the VM handler that asks each launcher on the node
// how its guest is doing. It owns nothing outside its node.
package agent
