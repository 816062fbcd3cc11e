// Package launcher is the body of the "ferry launcher" subcommand, the single
// process of a VM pod. Run starts the VM's QEMU through package hypervisor,
// follows the guest heartbeat on the serial log, serves a small HTTP API on
// the unix socket RunDir/launcher.sock and returns an exit code:
//
//	0  the guest powered off (from inside or on request: SIGTERM, POST /shutdown)
//	1  the VM could not be started (bad options, missing or broken disk image)
//	2  QEMU died unexpectedly (crash, killed)
//
// For exit codes 1 and 2 a one-line reason is also written to
// RunDir/termination-message for the node agent (and Kubernetes'
// terminationMessagePath) to report.
//
// API (HTTP over RunDir/launcher.sock):
//
//	GET  /status    {"qemu":"running","booted":true,"heartbeat":12,"heartbeatAt":"...","pid":123,...}
//	POST /shutdown  graceful stop: ACPI powerdown, 10 s grace, then quit/kill
//	/migrate/...    reserved for live migration (501 for now)
//
// StatusOf and RequestShutdown are the client side, for the node agent.
//
// Memory is given as a Kubernetes quantity and handed to QEMU in KiB,
// lowered by 8 KiB when a multiple of 256 KiB (hypervisor.SafeMemoryKiB
// explains the QEMU 7.2 TCG migration bug this avoids).
package launcher
