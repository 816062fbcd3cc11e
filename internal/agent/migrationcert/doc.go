// Package migrationcert keeps a node's migration certificate: the agent's part of
// encrypted live migration, and the node's identity in the agents' peer check (package
// agent asks the other nodes with it, over TLS, whether the control plane is down). It
// makes the node's private key on the node (it is written to the node's credentials
// directory and sent nowhere), asks the cluster's migration signer for a certificate
// through a CertificateSigningRequest (migrationtls.SignerName), waits for it, keeps key,
// certificate and the signer's CA in the directory (0700, files 0600; package
// migrationtls) for the node's launchers and agent, and renews it after two thirds of its
// lifetime. It touches no CSR but its own and nothing else in the cluster.
package migrationcert
