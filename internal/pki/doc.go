// Package pki is Ferry's one implementation of X.509 certificate handling: key and serial
// generation, certificate authorities, signing leaves (from a template or a certificate
// request), PEM encoding and parsing, and checking a leaf against its CA. The three
// certificate keepers build on it: the embedded control plane (internal/controlplane),
// the webhook serving certificates (internal/webhookcert) and the migration CA
// (internal/migrationtls), so that a fix to how certificates are made or read is made here
// once.
//
// It keeps no state and touches no file or API server: where certificates live, when they
// are renewed and what they are for stay with those packages. It is hand-written over the
// standard library (crypto/x509): what it adds is a few lines of policy (P-256 keys,
// random 127-bit serials, leaves that never outlive their CA, one CA shape), not a parser.
//
// Keys are written as PKCS #8 ("PRIVATE KEY"); keys are read from PKCS #8, SEC 1
// ("EC PRIVATE KEY") and PKCS #1 ("RSA PRIVATE KEY"), as the state directories and
// Secrets written by earlier versions (or by hand) may hold them.
package pki
