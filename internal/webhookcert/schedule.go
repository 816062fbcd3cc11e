package webhookcert

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"slices"
	"time"

	"github.com/ferryvm/ferry/internal/pki"
)

// The schedule, in shares of a certificate's life counted from its issue:
//
//	serving certificate   issued ─────────── 2/3 renewed ─── end
//	CA                    issued ─── 2/3 next CA published ─── 5/6 next CA signs ─── end
//
// A next CA is in every caBundle for a sixth of the old one's life (two months for a
// year) before any replica serves a certificate from it; the old CA stays in the bundle
// until it ends, and a serving certificate never outlives the CA that signed it (pki.Leaf),
// so every certificate a replica serves is in the bundle.

// issued is when c was made (its NotBefore is backdated).
func issued(c *x509.Certificate) time.Time { return c.NotBefore.Add(backdate) }

// lifeShare is the moment when num/den of c's life has passed.
func lifeShare(c *x509.Certificate, num, den int64) time.Time {
	return pki.LifeShare(c, issued(c), num, den)
}

// renewAt is when c is replaced: a serving certificate by a new one, a CA by publishing the
// next CA.
func renewAt(c *x509.Certificate) time.Time { return lifeShare(c, 2, 3) }

// promoteAt is when the next CA, published since renewAt(c), takes over signing from c.
func promoteAt(c *x509.Certificate) time.Time { return lifeShare(c, 5, 6) }

// caState is what the CA Secret holds.
type caState struct {
	// signer issues the serving certificates.
	signer pki.CA
	// next is published in the caBundles and signs from promoteAt(signer) on.
	next *pki.CA
	// retired CAs signed before; they stay in the bundle until they end.
	retired []*x509.Certificate
}

// bundle is the caBundle for the webhook configurations: every CA a replica's certificate
// may come from.
func (s caState) bundle(now time.Time) []byte {
	var b bytes.Buffer
	b.Write(s.signer.CertPEM)
	if s.next != nil {
		b.Write(s.next.CertPEM)
	}
	for _, c := range s.retired {
		if now.Before(c.NotAfter) {
			b.Write(pki.EncodeCert(c.Raw))
		}
	}
	return b.Bytes()
}

// advance takes the CA one step along the schedule, if one is due. published tells whether
// every webhook configuration trusts the current bundle (next included). newCA makes a CA.
// It returns what it did ("" for nothing).
func (s caState) advance(now time.Time, published bool, newCA func() (pki.CA, error)) (caState, string, error) {
	retired := slices.DeleteFunc(slices.Clone(s.retired), func(c *x509.Certificate) bool { return !now.Before(c.NotAfter) })
	step := ""
	if len(retired) != len(s.retired) {
		step = "dropped ended CAs from the bundle"
	}
	s.retired = retired
	switch {
	case s.next == nil && !now.Before(renewAt(s.signer.Cert)):
		next, err := newCA()
		if err != nil {
			return s, "", err
		}
		s.next = &next
		step = "added the next CA to the bundle"
	case s.next != nil && (published && !now.Before(promoteAt(s.signer.Cert)) || !now.Before(s.signer.Cert.NotAfter)):
		// Past its end the old CA's certificates are worthless anyway: the next one signs
		// even if some configuration has not taken it yet.
		s.retired = append(s.retired, s.signer.Cert)
		s.signer, s.next = *s.next, nil
		step = "the next CA took over signing"
	}
	return s, step, nil
}

// nextEvent is when advance has something to do next.
func (s caState) nextEvent() time.Time {
	t := s.signer.Cert.NotAfter
	if s.next == nil {
		t = minTime(t, renewAt(s.signer.Cert))
	} else {
		t = minTime(t, promoteAt(s.signer.Cert))
	}
	for _, c := range s.retired {
		t = minTime(t, c.NotAfter)
	}
	return t
}

// servingDue tells whether a replica's serving certificate and key (PEM, nil if missing)
// must be replaced for one from signer for hosts (sorted), and why; if not, when they must.
func servingDue(certPEM, keyPEM []byte, signer *x509.Certificate, hosts []string, now time.Time) (due bool, why string, at time.Time) {
	if certPEM == nil || keyPEM == nil {
		return true, "none yet", time.Time{}
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return true, "unreadable: " + err.Error(), time.Time{}
	}
	c := pair.Leaf
	if c == nil {
		if c, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return true, "unreadable: " + err.Error(), time.Time{}
		}
	}
	switch {
	case c.CheckSignatureFrom(signer) != nil:
		return true, "another CA signs now", time.Time{}
	case !slices.Equal(pki.Hosts(c), hosts):
		return true, "hosts changed", time.Time{}
	case !now.Before(renewAt(c)):
		return true, "two thirds of its life passed", time.Time{}
	}
	return false, "", renewAt(c)
}
