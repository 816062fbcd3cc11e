// Package agent is ferry-agent (`ferry agent`), the per-node process. Under `ferry up` it plays kubelet
// for its node (package kubelet) and is the VM handler that asks each launcher on the node
// how its guest is doing. It tells on its Node what the node's QEMU offers a guest (labels
// cpu-feature.node.virtualization.deckhouse.io/* and cpu-model.node.virtualization.deckhouse.io/*,
// cpulabels.go) and changes no other label. It owns nothing outside its node.
package agent
