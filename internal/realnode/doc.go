// Package realnode runs a node of `ferry up --kubelet=real`: a real kubelet, kube-proxy
// and containerd in a network namespace, a mount namespace and a PID namespace of the
// node's own, so the node's processes can be cut off, or all killed at once as by a
// power loss, without touching the machine's.
//
// `ferry up` writes each node's files (Prepare) and runs Command; the command's last
// step is `ferry node-boot`, which is Boot.
package realnode
