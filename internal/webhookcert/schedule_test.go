package webhookcert

import (
	"crypto/x509"
	"slices"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/pki"
)

// TestAdvance walks the CA's schedule: a CA issued at t0 for 60 minutes gets a next CA at
// 40 minutes, which signs from 50 once published (or at 60 regardless), and stays in the
// bundle as retired until it ends.
func TestAdvance(t *testing.T) {
	const life = 60 * time.Minute
	signer := mustCA(t, t0, life)
	next := mustCA(t, t0.Add(40*time.Minute), life)
	older := mustCA(t, t0.Add(-50*time.Minute), life) // ends at t0+10m
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	newCA := func() (pki.CA, error) { return next, nil }

	for _, tc := range []struct {
		name      string
		s         caState
		now       time.Time
		published bool
		want      string // the step
		signer    *x509.Certificate
		withNext  bool
		retired   []*x509.Certificate
	}{
		{"young CA: nothing", caState{signer: signer}, at(39), true, "", signer.Cert, false, nil},
		{"two thirds: the next CA is published", caState{signer: signer}, at(40), false, "added the next CA to the bundle", signer.Cert, true, nil},
		{"next published, before five sixths: waits", caState{signer: signer, next: &next}, at(49), true, "", signer.Cert, true, nil},
		{"five sixths, not in every configuration: waits", caState{signer: signer, next: &next}, at(55), false, "", signer.Cert, true, nil},
		{"five sixths, published: next signs, old retired", caState{signer: signer, next: &next}, at(50), true, "the next CA took over signing", next.Cert, false, []*x509.Certificate{signer.Cert}},
		{"old CA ended unpublished: next signs anyway", caState{signer: signer, next: &next}, at(60), false, "the next CA took over signing", next.Cert, false, []*x509.Certificate{signer.Cert}},
		{"retired CA kept until it ends", caState{signer: signer, retired: []*x509.Certificate{older.Cert}}, at(9), true, "", signer.Cert, false, []*x509.Certificate{older.Cert}},
		{"retired CA dropped when it ends", caState{signer: signer, retired: []*x509.Certificate{older.Cert}}, at(10), true, "dropped ended CAs from the bundle", signer.Cert, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, step, err := tc.s.advance(tc.now, tc.published, newCA)
			if err != nil {
				t.Fatal(err)
			}
			if step != tc.want {
				t.Errorf("step %q, want %q", step, tc.want)
			}
			if !got.signer.Cert.Equal(tc.signer) {
				t.Errorf("signer %s, want %s", got.signer.Cert.Subject.CommonName, tc.signer.Subject.CommonName)
			}
			if (got.next != nil) != tc.withNext {
				t.Errorf("next CA present %v, want %v", got.next != nil, tc.withNext)
			}
			if !slices.EqualFunc(got.retired, tc.retired, (*x509.Certificate).Equal) {
				t.Errorf("%d retired CAs, want %d", len(got.retired), len(tc.retired))
			}
		})
	}
}

// TestBundle checks the overlap: the bundle holds the signer, the next CA and every retired
// CA that has not ended, and nothing else.
func TestBundle(t *testing.T) {
	signer, next := mustCA(t, t0, time.Hour), mustCA(t, t0, time.Hour)
	retired, ended := mustCA(t, t0.Add(-50*time.Minute), time.Hour), mustCA(t, t0.Add(-70*time.Minute), time.Hour)
	s := caState{signer: signer, next: &next, retired: []*x509.Certificate{retired.Cert, ended.Cert}}
	got, err := pki.ParseCerts(s.bundle(t0))
	if err != nil {
		t.Fatal(err)
	}
	want := []*x509.Certificate{signer.Cert, next.Cert, retired.Cert}
	if !slices.EqualFunc(got, want, (*x509.Certificate).Equal) {
		var names []string
		for _, c := range got {
			names = append(names, c.Subject.CommonName)
		}
		t.Errorf("bundle %v, want the signer, the next CA and the retired CA that has not ended", names)
	}
}

// TestServingDue lists why a replica's certificate is replaced.
func TestServingDue(t *testing.T) {
	ca, other := mustCA(t, t0, 100*time.Hour), mustCA(t, t0, 100*time.Hour)
	hosts := []string{"a.svc", "b.svc"}
	certPEM, keyPEM, err := issueServing(ca, hosts, t0, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := issueServing(ca, hosts, t0, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		cert, key []byte
		signer    *x509.Certificate
		hosts     []string
		now       time.Time
		due       bool
		why       string
	}{
		{"fresh", certPEM, keyPEM, ca.Cert, hosts, t0.Add(19 * time.Minute), false, ""},
		{"two thirds of its life", certPEM, keyPEM, ca.Cert, hosts, t0.Add(20 * time.Minute), true, "two thirds of its life passed"},
		{"no files", nil, nil, ca.Cert, hosts, t0, true, "none yet"},
		{"key of another certificate", certPEM, otherKey, ca.Cert, hosts, t0, true, ""},
		{"another CA signs", certPEM, keyPEM, other.Cert, hosts, t0, true, "another CA signs now"},
		{"hosts changed", certPEM, keyPEM, ca.Cert, []string{"a.svc", "c.svc"}, t0, true, "hosts changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			due, why, at := servingDue(tc.cert, tc.key, tc.signer, tc.hosts, tc.now)
			if due != tc.due || tc.why != "" && why != tc.why {
				t.Errorf("due %v (%s), want %v (%s)", due, why, tc.due, tc.why)
			}
			if !due && !at.Equal(t0.Add(20*time.Minute)) {
				t.Errorf("renew at %s, want two thirds of its life (%s)", at, t0.Add(20*time.Minute))
			}
		})
	}
}
