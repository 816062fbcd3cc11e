// Package scale runs `ferry-bench scale` (RunScale): Ferry's control plane with
// simulated nodes (`ferry sim-nodes`, no QEMU) through four phases, start, drain of one
// node, evacuation of several at once and failure of some, each timed and metered (the
// controller's CPU and RSS, the apiserver's request rate, the VM controller's reconcile
// times; scaleMeter).
package scale
