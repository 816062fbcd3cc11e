package webhookcert

import (
	"bytes"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/ferryvm/ferry/internal/pki"
)

// The keys of the CA Secret.
const (
	keyCACert      = "ca.crt"
	keyCAKey       = "ca.key"
	keyNextCert    = "next.crt"
	keyNextKey     = "next.key"
	keyRetiredCert = "retired.crt"
)

// decodeState reads the CA Secret. ok is false when it holds no CA yet (a Secret created
// empty, by hand or by an older version).
func decodeState(sec *corev1.Secret) (s caState, ok bool, err error) {
	d := sec.Data
	if len(d[keyCACert]) == 0 {
		return caState{}, false, nil
	}
	if s.signer, err = parseAuthority(d[keyCACert], d[keyCAKey]); err != nil {
		return caState{}, false, fmt.Errorf("%s/%s: %w", keyCACert, keyCAKey, err)
	}
	if len(d[keyNextCert]) > 0 {
		next, err := parseAuthority(d[keyNextCert], d[keyNextKey])
		if err != nil {
			return caState{}, false, fmt.Errorf("%s/%s: %w", keyNextCert, keyNextKey, err)
		}
		s.next = &next
	}
	if s.retired, err = pki.ParseCerts(d[keyRetiredCert]); err != nil {
		return caState{}, false, fmt.Errorf("%s: %w", keyRetiredCert, err)
	}
	return s, true, nil
}

// encode writes s into the Secret's data, replacing what Ferry keeps there.
func (s caState) encode(sec *corev1.Secret) {
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	for _, k := range []string{keyCACert, keyCAKey, keyNextCert, keyNextKey, keyRetiredCert} {
		delete(sec.Data, k)
	}
	sec.Data[keyCACert], sec.Data[keyCAKey] = s.signer.CertPEM, s.signer.KeyPEM
	if s.next != nil {
		sec.Data[keyNextCert], sec.Data[keyNextKey] = s.next.CertPEM, s.next.KeyPEM
	}
	var retired bytes.Buffer
	for _, c := range s.retired {
		retired.Write(pki.EncodeCert(c.Raw))
	}
	if retired.Len() > 0 {
		sec.Data[keyRetiredCert] = retired.Bytes()
	}
}
