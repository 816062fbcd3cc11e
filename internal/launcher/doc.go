// Package launcher is the body of ferry-launcher (and `ferry launcher`), the single
// process of a VM pod. Run starts the VM's QEMU through package hypervisor,
// follows the guest heartbeat on the serial log, serves a small HTTP API on
// the unix socket RunDir/launcher.sock and returns an exit code:
//
//	0  the guest powered off (from inside or on request: SIGTERM, POST /shutdown)
//	1  the VM could not be started (bad options, missing or broken disk image)
//	2  QEMU died unexpectedly (crash, killed)
//	3  the VM live-migrated away (ExitMigrated); the guest runs on the target
//	4  a newer instance of the VM holds its disk lease (ExitSuperseded): this one
//	   was fenced and its QEMU killed, or never started
//
// A one-line outcome is also written to RunDir/termination-message for the
// node agent (and Kubernetes' terminationMessagePath) to report; for 3 it
// reads "migrated to URI: total ..., downtime ..., N MiB sent".
//
// API (HTTP over RunDir/launcher.sock):
//
//	GET  /status          {"qemu":"running","booted":true,"heartbeat":12,"heartbeatAt":"...","pid":123,...}
//	POST /shutdown        graceful stop: ACPI powerdown, 10 s grace, then quit/kill
//	POST /migrate         start a live migration (MigrationRequest)
//	POST /migrate/cancel  cancel it; the guest keeps running here
//
// StatusOf, RequestShutdown, StartMigration and CancelMigration are the
// client side, for the node agent.
//
// Live migration (shared storage: both sides open the same disk files):
// the target launcher runs with Options.Incoming; QEMU starts with
// -incoming defer and listens on tcp:MigrationAddress:PORT (a free port),
// reported as Status.IncomingURI while QEMU is "inmigrate". The migration
// controller then POSTs that URI to the source launcher's /migrate. The
// source polls query-migrate (Status.Migration), cancels the migration
// when it does not complete within the completion timeout or its remaining
// bytes stop decreasing for the progress timeout, and, once it completed,
// quits QEMU and exits ExitMigrated. After a failed or cancelled migration
// the guest keeps running on the source (resumed with cont if QEMU left it
// paused) and the launcher stays up. The target runs the guest as soon as
// the stream is complete; its serial log continues with the guest's
// output. A target stopped before that exits 0; a target whose stream
// broke off (source cancelled or died) exits 2, "incoming migration
// failed".
//
// Migration TLS (Options.MigrationTLSDir, which the node agent sets through
// $FERRY_MIGRATION_TLS_DIR): both ends check each other's certificate. The
// launcher copies the node's credentials (package migrationtls) into its run
// directory for QEMU just before the migration and removes the copy once QEMU
// has read them. A target accepts only a source with a Ferry node's
// certificate; a source accepts only a target whose certificate names
// MigrationRequest.TargetNode. Without valid credentials a target does not
// start (exit 1) and a source refuses POST /migrate: the guest stays put.
//
// RunSimulated is Run around an in-memory hypervisor.Fake instead of QEMU
// (no process, disk, NIC or disk lease), for scale tests with thousands of
// VMs in one process; simulated launchers migrate to each other through a
// SimNet.
//
// Relay (`ferry-launcher console|vnc`, run in the launcher's container by pods/exec) joins
// its stdin/stdout to the serial console or to QEMU's VNC server, which listens on
// RunDir/vnc.sock only: `ferry v console` and `ferry v vnc` reach a VM so.
//
// Memory is given as a Kubernetes quantity and handed to QEMU in KiB,
// lowered by 8 KiB when a multiple of 256 KiB (hypervisor.SafeMemoryKiB
// explains the QEMU 7.2 TCG migration bug this avoids).
package launcher
