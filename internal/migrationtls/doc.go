// Package migrationtls is what the three parties of encrypted live migration share: the
// controller's signer (internal/controller/migrationsigner), the node agent that holds its
// node's certificate (internal/agent/migrationcert) and the launcher that hands it to QEMU
// (internal/launcher).
//
// It owns the names (the CSR signer, the certificate subject of a node, the usages), the
// node's credentials directory (QEMU's tls-creds-x509 layout, written and checked here)
// and the renewal rule. It talks to no API server and starts no process.
//
// Trust model: the controller keeps a migration CA in a Secret and signs a certificate for
// node N only when N's own agent asks (its Pod-bound token names N) or a cluster admin
// does. A node's private key is made on the node and never leaves it. A migration target
// accepts a stream only from a certificate of that CA whose subject is a Ferry node's; a
// source sends only to a target whose certificate names the node the controller chose.
package migrationtls
