// Package guestagent talks to the QEMU guest agent (qemu-ga) inside a guest, over the
// unix socket that QEMU exposes for the VM's virtio-serial channel
// org.qemu.guest_agent.0 (package hypervisor names it qga.sock in the run directory).
//
// The agent's protocol is QMP-like JSON, but the channel is a plain byte pipe that
// survives neither a guest reboot nor an agent restart cleanly: bytes of an earlier
// exchange may still be in flight, and QEMU accepts a connection (and swallows what is
// written) while no agent runs in the guest. So every exchange starts with
// guest-sync-delimited and a fresh random id: the agent answers with 0xFF followed by the
// id, and everything before that marker is dropped. No answer within the timeout means
// "no agent" — a guest without qemu-ga is a normal guest, not a broken one.
//
// Hand-written rather than a library: the few commands Ferry needs (sync, ping, OS info,
// host name, interfaces, shutdown) fit in a page, and the reply parser is the part that
// reads what a tenant's guest writes, so it is kept small and fuzzed (FuzzReadReply).
//
// This package only reads and asks; what the launcher makes of the answers (the pod's
// AgentReady condition, the VM's guestOSInfo) is decided elsewhere.
package guestagent
