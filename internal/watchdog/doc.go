// Package watchdog owns the timer that fences a node: the node's agent feeds it only after
// it renewed its node Lease, and when feeding stops for longer than the timeout the
// watchdog resets the node, so that its VMs are dead before the cluster starts them again
// elsewhere.
//
// Three implementations share the Watchdog interface: Device drives the Linux watchdog
// device of a real node, Process talks to the per-node watchdog process that `ferry up`
// runs (Serve is its server side, KillNode its reset), and Fake is for tests.
//
// The package decides nothing about leases or when to feed; that is the agent's fencing
// loop. It must not stop a timer on its own: once armed, only Disarm stops it, so that a
// crashed or frozen feeder gets its node reset.
package watchdog
