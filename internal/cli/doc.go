// Package cli holds `ferry v`, the VM verbs: start, stop, restart, evict, migrate, console
// and vnc. Each operation verb creates a VirtualMachineOperation, like a user would with
// kubectl, and --wait follows it to its end. The verbs take d8's command lines: a VM is VM
// or VM.NAMESPACE, the namespace otherwise -n or the kubeconfig context's (globals.go).
//
// console and vnc join the user's terminal or a local VNC port to the VM's QEMU through
// launcher.Relay: in this process when the launcher's run directory is on this machine
// (ferry up's stand-in kubelet serves no exec), else through pods/exec of `ferry-launcher
// console|vnc` in the launcher pod (relay.go).
//
// ssh, scp and port-forward reach a running VM's ports: port-forward carries TCP over a
// Transport (direct: the VM's address from this host; exec: pods/exec of `ferry v connect`
// in the launcher pod through the Kubernetes API), and ssh/scp run the system OpenSSH
// client with port-forward --stdio as its ProxyCommand, so keys, agents, known_hosts and
// ssh_config work as the user has them.
package cli
