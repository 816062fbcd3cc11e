// Package hypervisor runs and controls one QEMU process per VM, using only
// the Go standard library.
//
// Start launches qemu-system-x86_64 (machine "pc", KVM when usable, TCG
// otherwise) with virtio-blk disks (image locking on), the serial console on
// a unix socket chardev that also logs to a file, and QMP on a unix socket.
// Files in Config.RunDir:
//
//	qmp.sock     QMP monitor (used by this package)
//	serial.sock  interactive serial console, one client at a time (Console)
//	serial.log   everything the guest printed on ttyS0 (SerialFollower);
//	             a previous run's log is kept as serial.log.prev
//	qemu.log     QEMU's stdout/stderr
//	qemu.pid     QEMU's pid
//
// QEMU is started with Pdeathsig SIGKILL and in its own process group, so it
// never outlives the launching process and terminal signals reach only the
// launcher.
//
// The QMP client (QMPClient) serializes commands, matches replies by id and
// hands asynchronous events to registered handlers.
//
// Live migration: start the destination with Config.Incoming (-incoming
// defer), call PrepareIncoming with a listen URI, then MigrateOut on the
// source and poll MigrationStatus (or WaitMigration). The destination resumes
// by itself; quit the source (Shutdown) once it reports "postmigrate".
// With MigrationTLS (PrepareIncoming's argument, MigrationParams.TLS) the stream is
// TLS with certificates checked at both ends: QMP object-add of a tls-creds-x509 object
// (verify-peer on; an authz-list on a target that restricts its peers) and the
// migration parameters tls-creds, tls-hostname and tls-authz, read back before the
// migration starts.
// Notes for Debian 12's QEMU 7.2 under TCG: give guests a RAM size that is
// not a multiple of 256 KiB (SafeMemoryKiB) or migration can lose pages, and
// never issue calc-dirty-rate in dirty-bitmap mode (it crashes QEMU).
//
// Consumers should declare the narrow interface they need rather than
// depend on *Instance directly, so that *Fake can stand in for tests, e.g.:
//
//	type VM interface {
//		PID() int
//		Done() <-chan struct{}
//		Status(ctx context.Context) (string, error)
//		Shutdown(ctx context.Context, grace time.Duration) error
//		Kill()
//		Wait() (guestShutdown bool, err error)
//		PrepareIncoming(ctx context.Context, uri string, tls *MigrationTLS) error
//		MigrateOut(ctx context.Context, uri string, p MigrationParams) error
//		MigrationStatus(ctx context.Context) (MigrationInfo, error)
//		WaitMigration(ctx context.Context, interval time.Duration) (MigrationInfo, error)
//		CancelMigration(ctx context.Context) error
//		Resume(ctx context.Context) error
//	}
//
// ProbeCPU asks the node's QEMU, without a guest, what it can give one under the node's
// accelerator: the CPUID flags of its fullest model (max under TCG, host under KVM) in the
// spelling of `-cpu help`, checked together on BaseModel with enforce in a stopped machine,
// and the named models with no unavailable feature. The node agent labels its Node with
// them; CanonicalCPUFeature maps QEMU's aliases of a flag (sse4_2, lahf_lm) to that spelling.
//
// The guest image used by tests and demos is built by
// hack/build-guest-image.sh; its console protocol ("FERRY-GUEST BOOTED",
// "CNT <n>" heartbeats, "dirty <MiB>", "stop", "poweroff") is what
// SerialFollower understands.
package hypervisor
