package pki

import (
	"crypto/x509"
	"errors"
	"time"
)

// ErrOutsideValidity is what VerifyLeaf's error is when the certificate is expired or
// not valid yet, to tell that from a certificate that is not the CA's.
var ErrOutsideValidity = errors.New("the certificate is not valid at this time")

// validityError says which end of its validity a certificate is past, and is
// ErrOutsideValidity.
type validityError string

func (e validityError) Error() string      { return string(e) }
func (validityError) Is(target error) bool { return target == ErrOutsideValidity }

// VerifyLeaf checks that c is valid at at, chains to roots for each of usages (none: any
// usage) and is for each of hosts (DNS names or IP addresses).
func VerifyLeaf(c *x509.Certificate, roots *x509.CertPool, at time.Time, usages []x509.ExtKeyUsage, hosts ...string) error {
	// Said first and plainly: x509's own message for these names neither time.
	switch {
	case at.After(c.NotAfter):
		return validityError("the certificate expired at " + c.NotAfter.UTC().Format(time.RFC3339))
	case at.Before(c.NotBefore):
		return validityError("the certificate is not valid before " + c.NotBefore.UTC().Format(time.RFC3339))
	}
	if len(usages) == 0 {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	}
	// One usage at a time: x509 accepts a chain that allows any one of those it is given.
	for _, u := range usages {
		opts := x509.VerifyOptions{Roots: roots, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{u}}
		if _, err := c.Verify(opts); err != nil {
			return err
		}
	}
	for _, h := range hosts {
		if err := c.VerifyHostname(h); err != nil {
			return err
		}
	}
	return nil
}

// LifeShare is when num/den of c's life, counted from start (its issue; NotBefore if it
// was not backdated), has passed: the keepers renew a certificate after two thirds.
func LifeShare(c *x509.Certificate, start time.Time, num, den int64) time.Time {
	life := c.NotAfter.Sub(start)
	return start.Add(time.Duration(int64(life) / den * num))
}
