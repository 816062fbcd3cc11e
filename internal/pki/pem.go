package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
)

// PEM block types.
const (
	blockCert    = "CERTIFICATE"
	blockRequest = "CERTIFICATE REQUEST"
	blockPKCS8   = "PRIVATE KEY"
	blockEC      = "EC PRIVATE KEY"
	blockRSA     = "RSA PRIVATE KEY"
	blockPublic  = "PUBLIC KEY"
)

// NewKey makes a private key: ECDSA P-256, which Go, GnuTLS (QEMU) and Kubernetes all
// take, and which is cheap enough to make on every renewal.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// serialLimit bounds serial numbers: 127 random bits stay positive and within the 20
// octets RFC 5280 allows.
var serialLimit = new(big.Int).Lsh(big.NewInt(1), 127)

// NewSerial is a random certificate serial number.
func NewSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, serialLimit)
}

// EncodeCert is a certificate's DER as a PEM block.
func EncodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: blockCert, Bytes: der})
}

// EncodeKey is a private key as a PKCS #8 PEM block.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: blockPKCS8, Bytes: der}), nil
}

// EncodePublicKey is a public key as a PKIX PEM block ("PUBLIC KEY").
func EncodePublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: blockPublic, Bytes: der}), nil
}

// ParseKey reads the first PEM block of data as a private key: PKCS #8, SEC 1 (EC) or
// PKCS #1 (RSA).
func ParseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM key")
	}
	var (
		k   any
		err error
	)
	switch block.Type {
	case blockPKCS8:
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case blockEC:
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case blockRSA:
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("a %q PEM block, not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T key cannot sign", k)
	}
	return s, nil
}

// ParseCert reads the first PEM block of data, which must be a certificate.
func ParseCert(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	switch {
	case block == nil:
		return nil, errors.New("no PEM certificate")
	case block.Type != blockCert:
		return nil, fmt.Errorf("a %q PEM block, not a %s", block.Type, blockCert)
	}
	return x509.ParseCertificate(block.Bytes)
}

// ParseCerts reads every certificate of a PEM bundle, skipping blocks of other types. An
// empty bundle is no error.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out, nil
		}
		if block.Type != blockCert {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// NewRequest makes a certificate request for key (PEM), with tmpl's subject and names.
func NewRequest(tmpl *x509.CertificateRequest, key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: blockRequest, Bytes: der}), nil
}

// ParseRequest reads a certificate request as a node sends it: one PEM block of type
// CERTIFICATE REQUEST and nothing else, signed by the key it asks a certificate for. Its
// input comes from the network: it is fuzzed (FuzzParseRequest), and its errors quote no
// more of it than a block type. Whether the request's subject and names are acceptable
// is the caller's policy.
func ParseRequest(data []byte) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(data)
	switch {
	case block == nil:
		return nil, errors.New("no PEM block")
	case block.Type != blockRequest:
		return nil, fmt.Errorf("a %q PEM block, not a %s", block.Type, blockRequest)
	case len(bytes.TrimSpace(rest)) > 0:
		return nil, errors.New("more than one PEM block")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the request does not parse: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the request is not signed by its own key: %w", err)
	}
	return req, nil
}
