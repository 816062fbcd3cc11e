// Package up is `ferry up`: an all-in-one Ferry cluster on one machine. It starts the
// embedded control plane, installs Ferry's CRDs, runs ferry-controller and one
// ferry-agent per node (two with --split-agent) as child processes (as root, each node in its own network
// namespace), creates a sample VM on first start, and on SIGINT/SIGTERM stops all of it,
// leaving no QEMU or namespace behind. Running it again on the same state directory resumes.
package up
