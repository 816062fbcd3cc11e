// Package kubelet runs one node's launcher pods for the node agent. It has two parts, and
// an agent plays one or both (Role):
//
//   - the kubelet's: register the Node, renew its Lease, run the launcher pods bound to
//     the node as processes, report their status and finish their deletion. Under `ferry
//     up` no real kubelet runs and the agent plays this part; on a real cluster the kubelet
//     does, and the agent leaves it alone.
//   - the VM handler's, which no kubelet knows: ask each launcher how its guest is, set the
//     pod's guest-ready readiness gate from the guest's heartbeat, publish where a
//     migration target listens, start and cancel migrations the migration controller asks
//     for in a pod's annotations, and report their progress. With a real kubelet the
//     handler renews a Lease of its own (ferry-node-lease/<node>) for fencing, and finds
//     each launcher's run directory at pods/<pod UID> of its state directory, which the
//     launcher pod mounts from the node.
//
// It never changes objects of other nodes.
package kubelet
