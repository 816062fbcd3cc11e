// Package simnode runs simulated nodes in one process for scale and chaos tests: each Node
// is a real agent (internal/agent: Node object, Lease, pod handling, fencing) whose launchers
// run in memory (launcher.RunSimulated), with a node's hardware around it: power, a network
// link that can be cut, an agent process that can be killed or frozen, and a watchdog that
// outlives the agent and resets the node when it is not fed in time.
//
// Guests records when each simulated guest runs, so a chaos run can prove that no VM ran
// in two places at once. Cluster.Serve offers the faults and that record over HTTP.
package simnode
