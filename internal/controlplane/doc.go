// Package controlplane runs a single-node Kubernetes control plane inside the
// current process: an embedded etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler, all linked from upstream Kubernetes and driven through
// their option/config APIs rather than through their cobra commands (which
// install signal handlers and apply global logging configuration).
//
// Start generates (on first use) a cluster CA, serving and client
// certificates and a service-account key pair under Options.DataDir and
// reuses them on later starts, so restarting on the same DataDir resumes the
// cluster with all objects intact. Stop shuts the components down in order
// (scheduler and controller-manager, then apiserver, then etcd) within a
// deadline.
//
// Logging: the components log through the process-global klog. Start
// redirects klog (and etcd's zap logger) away from stdout/stderr into
// DataDir/logs/*.log, or into Options.Log when that is set.
//
// Limitations: the upstream components keep process-global state (klog,
// feature gates, metrics registries, configz). Start may be called again
// after Stop in the same process (configz entries are released), but two
// control planes must not run concurrently in one process.
package controlplane
