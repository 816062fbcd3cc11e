package migrationtls

import (
	"crypto/x509"
	"crypto/x509/pkix"

	"github.com/ferryvm/ferry/internal/pki"
)

// NewRequest makes a new private key for node and the certificate request for it, both
// PEM. The key is pki's (ECDSA P-256): GnuTLS (QEMU) and Go both handle it, and it is
// cheap to make on every renewal.
func NewRequest(node string) (keyPEM, csrPEM []byte, err error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, nil, err
	}
	if keyPEM, err = pki.EncodeKey(key); err != nil {
		return nil, nil, err
	}
	csrPEM, err = pki.NewRequest(&x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: NodeCN(node)},
		DNSNames: []string{node},
	}, key)
	if err != nil {
		return nil, nil, err
	}
	return keyPEM, csrPEM, nil
}
