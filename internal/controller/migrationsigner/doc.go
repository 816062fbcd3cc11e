// Package migrationsigner is the signer of node migration certificates
// (migrationtls.SignerName): it keeps the migration CA in a Secret of Ferry's namespace
// (made on first need; never shown to anyone but this controller), and approves and signs
// the CertificateSigningRequests of that signer that its rules allow, denying the others
// with the reason. It touches no other CSR and no other Secret.
//
// A request is approved only when it asks for exactly the usages a migration endpoint
// needs, for the subject "system:ferry-node:<node>" with <node> as its only name, with a
// key QEMU and Go both take, and comes from that node's agent (its ServiceAccount token
// bound to a Pod on <node>, which kube-apiserver shows as the request's extra
// authentication.kubernetes.io/node-name) or from a cluster admin (system:masters, as the
// agents of `ferry up` are). A request someone else approved is signed only under the same
// rules; otherwise it is marked Failed.
package migrationsigner
