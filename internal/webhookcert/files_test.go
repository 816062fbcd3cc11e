package webhookcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

// TestWatcherReloadsPair writes pairs the way a replica does while controller-runtime's
// certificate watcher (what the webhook server uses) watches the files: it serves each
// new pair well before its 10 s poll would notice (all but the first, which may come before
// it watches), so the file events did it, and it never reads a certificate with another's key.
func TestWatcherReloadsPair(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, time.Now(), time.Hour)
	issue := func() (certPEM, keyPEM []byte) {
		certPEM, keyPEM, err := issueServing(ca, []string{"hook.ferry-system.svc"}, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return certPEM, keyPEM
	}
	certPEM, keyPEM := issue()
	if err := writePair(dir, "tls.crt", "tls.key", certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	w, err := certwatcher.New(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatalf("the watcher cannot read the pair: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Start(ctx) }()

	for i := range 6 {
		certPEM, keyPEM := issue()
		want, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		if err := writePair(dir, "tls.crt", "tls.key", certPEM, keyPEM); err != nil {
			t.Fatal(err)
		}
		// The first write may come before Start has put its watches on the files (it runs
		// in its own goroutine and says nothing when it has): that one may wait for the
		// watcher's 10 s poll (a CI run under load did). The others must come from the
		// file events.
		within := 5 * time.Second
		if i == 0 {
			within = 15 * time.Second
		}
		start := time.Now()
		err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, within, true, func(context.Context) (bool, error) {
			got, _ := w.GetCertificate(nil)
			return got != nil && bytes.Equal(got.Certificate[0], want.Certificate[0]), nil
		})
		if err != nil {
			t.Fatalf("write %d: the watcher did not serve the new certificate within %s", i, within)
		}
		t.Logf("write %d: served after %s", i, time.Since(start).Round(time.Millisecond))
	}

	// One directory of pairs at a time, behind the ..data link; the names are links.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 4 {
		t.Errorf("certificate directory holds %v, want ..data, one pair directory, tls.crt and tls.key", names)
	}
	got, gotKey, err := readPair(dir, "tls.crt", "tls.key")
	if err != nil || got == nil || gotKey == nil {
		t.Fatalf("reading the pair back: %v", err)
	}
}
