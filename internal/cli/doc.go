// Package cli holds `ferry v`, the VM verbs: start, stop, restart, evict, migrate and
// console. Each verb creates a VirtualMachineOperation, like a user would with kubectl,
// and --wait follows it to its end.
//
// ssh, scp and port-forward reach a running VM's ports: port-forward carries TCP over a
// Transport (direct: the VM's address from this host; exec: pods/exec of `ferry v connect`
// in the launcher pod through the Kubernetes API), and ssh/scp run the system OpenSSH
// client with port-forward --stdio as its ProxyCommand, so keys, agents, known_hosts and
// ssh_config work as the user has them.
package cli
