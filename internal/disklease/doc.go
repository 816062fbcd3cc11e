// Package disklease is the storage-side guard that keeps a VM from running on
// two nodes at once: a lease file beside the VM's disk, on the same shared
// storage, holding a fencing token. The controller gives every cold start of a
// VM a token higher than any before; an instance whose token is beaten must
// stop, and an instance that finds a higher token stored must not start.
//
// The lease of a disk at PATH is PATH.lease, a JSON Record:
//
//	{"token":7,"holder":"ns/pod (/var/lib/ferry/node/pods/UID)","node":"n1",
//	 "renewedAt":"2025-01-02T03:04:05.123456789Z","ttlMs":3000}
//
// Every read-modify-write happens under an exclusive flock(2) on PATH.lease.lock
// (which is never removed: removing a lock file others may hold open breaks
// mutual exclusion), and every write is atomic (temporary file, fsync,
// rename), so readers never see half a record. The storage must honour flock
// across its clients (NFSv4 does, as byte-range locks).
//
// The rules (ttl defaults to DefaultTTL):
//
//   - Acquire (cold start, token T): a stored token above T refuses with a
//     *SupersededError. Otherwise T is written at once; if another holder
//     renewed within its TTL (it may still run), Acquire then waits until that
//     renewal runs out (renewedAt + TTL): a holder renewing on time reads the
//     higher token within TTL/3 and kills its QEMU first. Then it checks again.
//     A stale, released or missing lease is taken without waiting.
//   - TakeOver (a live-migration target once the guest runs on it): the same
//     token passes to the new holder, marked as a handover; allowed while the
//     stored token is not above T.
//   - Renew (every TTL/3 while QEMU runs): Held, or Superseded when a higher
//     token is stored (or the same token by a claimant that is not a
//     handover), or HandedOver when a migration target took the same token.
//   - Release (QEMU gone): renewedAt becomes zero, the token stays, so the next
//     start need not wait.
//
// Freshness compares renewedAt with the local clock: node clocks are assumed
// to agree to well within a TTL (NTP).
//
// The package knows nothing of QEMU or Kubernetes; package launcher decides
// what to kill and how to exit. It touches only the lease and lock files.
package disklease
