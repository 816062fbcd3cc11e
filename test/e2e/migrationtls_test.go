package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/launcher"
	"github.com/ferryvm/ferry/internal/migrationtls"
	"github.com/ferryvm/ferry/internal/up"
)

// nodeTLSDir is where node keeps its migration key and certificate under `ferry up`.
func nodeTLSDir(node string) string {
	return filepath.Join(up.NodeDir(cl.stateDir, node), migrationtls.DirName)
}

// TestMigrationOverTLS: every node holds its own migration certificate from the
// controller's signer (a CertificateSigningRequest per node, approved and issued; the key
// only in the node's directory); a live migration's stream is TLS on the wire (it opens
// with a TLS handshake, and QEMU's plain stream header never passes) and the source
// checked the target node's name; the guest keeps its address and counts on, on one QEMU.
func TestMigrationOverTLS(t *testing.T) {
	ctx := context.Background()
	for i := 1; i <= cl.nodes; i++ {
		node := fmt.Sprintf("node-%d", i)
		var c *migrationtls.Credentials
		eventually(t, time.Minute, node+"'s migration certificate", func() (bool, string) {
			var err error
			c, err = migrationtls.Load(nodeTLSDir(node))
			return err == nil, fmt.Sprint(err)
		})
		if err := c.Check(node, time.Now()); err != nil {
			t.Errorf("%s: %v", node, err)
		}
		for name, want := range map[string]os.FileMode{".": 0o700, hypervisor.TLSServerKeyFile: 0o600} {
			if st, err := os.Stat(filepath.Join(nodeTLSDir(node), name)); err != nil || st.Mode().Perm() != want {
				t.Errorf("%s: %s: %v %v, want mode %v", node, name, st, err, want)
			}
		}
		var csrs certificatesv1.CertificateSigningRequestList
		if err := cl.c.List(ctx, &csrs); err != nil {
			t.Fatal(err)
		}
		issued := false
		for _, csr := range csrs.Items {
			block, _ := pem.Decode(csr.Status.Certificate)
			if csr.Spec.SignerName != migrationtls.SignerName || block == nil {
				continue
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err == nil && cert.SerialNumber.Cmp(c.Cert.SerialNumber) == 0 {
				issued = true
				t.Logf("%s: CSR %s by %s: %s, valid until %s", node, csr.Name, csr.Spec.Username, cert.Subject, cert.NotAfter.UTC().Format(time.RFC3339))
			}
		}
		if !issued {
			t.Errorf("%s: no CertificateSigningRequest of %s issued its certificate", node, migrationtls.SignerName)
		}
	}

	vm := waitRunning(t, "linux-vm", 2*time.Minute)
	last := waitHeartbeat(t, "linux-vm", 0, time.Minute)
	slowMigrations(t) // a transfer of seconds, to look at while it runs
	w := sniff(t)
	op := newEvict(t, "linux-vm")
	running := waitTransferring(t, op)
	ms := running.Status.Migration
	var target corev1.Pod
	if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "default", Name: ms.TargetPod}, &target); err != nil {
		t.Fatal(err)
	}
	uri := target.Annotations[v1alpha2.AnnotationIncomingURI]
	// The source launcher's view, or, once it has exited, what it left.
	srcDir := runDirOf(t, ms.SourcePod)
	var mig *launcher.MigrationStatus
	if st, err := launcher.StatusOf(ctx, srcDir); err == nil {
		mig = st.Migration
	} else if mig, err = launcher.FinalMigration(srcDir); err != nil {
		t.Fatalf("the source launcher neither answers nor left its migration's status: %v", err)
	}
	if mig == nil || mig.TLSHostname != target.Spec.NodeName {
		t.Errorf("source launcher's migration %+v: want TLS checked against node %s", mig, target.Spec.NodeName)
	} else {
		t.Logf("source launcher: migrating to %s over TLS, the target's certificate checked for %s", mig.URI, mig.TLSHostname)
	}
	// The target takes the stream from the source's node only, not from any node's
	// certificate.
	peers := "peers CN=" + migrationtls.NodeCN(vm.Status.NodeName)
	eventually(t, 30*time.Second, "the target launcher's TLS peers", func() (bool, string) {
		b, _ := os.ReadFile(filepath.Join(runDirOf(t, ms.TargetPod), "launcher.log"))
		return strings.Contains(string(b), peers+")"), string(b)
	})
	done, _ := waitOpEnd(t, op, v1alpha2.OpCompleted)
	w.stop()

	flows := w.flowsTo(strings.TrimPrefix(uri, "tcp:"))
	var stream int64
	for _, f := range flows {
		t.Logf("on the wire %s → %s: %d bytes (each packet counted on the two host interfaces it passes), starting % x, QEMU's plain header seen: %v",
			f.Src, f.Dst, f.Bytes, f.First, f.Plain)
		if f.Plain {
			t.Errorf("QEMU's plain migration stream passed %s → %s", f.Src, f.Dst)
		}
		if f.Dst == strings.TrimPrefix(uri, "tcp:") {
			stream += f.Bytes
			if len(f.First) < 3 || f.First[0] != 0x16 || f.First[1] != 0x03 {
				t.Errorf("the stream to %s opens with % x, not a TLS handshake record", f.Dst, f.First)
			}
		}
	}
	if stream < 1<<20 {
		t.Errorf("%d bytes seen towards the target's %s, want the migration stream (MiBs)", stream, uri)
	}

	after := waitRunning(t, "linux-vm", time.Minute)
	if after.Status.NodeName != target.Spec.NodeName || after.Status.IPAddress != vm.Status.IPAddress {
		t.Errorf("VM on %s at %s, want %s at %s", after.Status.NodeName, after.Status.IPAddress, target.Spec.NodeName, vm.Status.IPAddress)
	}
	t.Logf("migrated %s → %s over TLS: transfer %d ms, downtime %d ms", vm.Status.NodeName, after.Status.NodeName, done.Status.Migration.TransferMs, done.Status.Migration.DowntimeMs)
	if line := assertMigrationFigures(t, done, "linux-vm", done.CreationTimestamp.Time); line == "" {
		t.Errorf("no source launcher logged the migration's figures")
	}
	assertContinued(t, "linux-vm", last)
	assertOneQEMU(t, "linux-vm")
}

// TestMigrationWithoutCertificateFailsClosed: a node whose certificate is gone does not
// migrate in the clear: the operation fails saying why, and the guest runs on where it was.
func TestMigrationWithoutCertificateFailsClosed(t *testing.T) {
	vm := waitRunning(t, "linux-vm", 2*time.Minute)
	dir := nodeTLSDir(vm.Status.NodeName)
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	restore := func() { _ = os.Rename(dir+".away", dir) }
	t.Cleanup(restore)
	last := waitHeartbeat(t, "linux-vm", 0, time.Minute)
	op := newEvict(t, "linux-vm")
	got, reason := waitOpEnd(t, op, v1alpha2.OpFailed)
	msg := ""
	if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha2.OpConditionCompleted); c != nil {
		msg = c.Message
	}
	if !strings.Contains(msg, "no migration certificate") {
		t.Errorf("failed with %s: %q, want it to say the node has no migration certificate", reason, msg)
	}
	t.Logf("failed with %s: %s", reason, msg)
	restore()
	after := waitRunning(t, "linux-vm", time.Minute)
	if after.Status.NodeName != vm.Status.NodeName {
		t.Errorf("VM on %s, want it still on %s", after.Status.NodeName, vm.Status.NodeName)
	}
	waitHeartbeat(t, "linux-vm", last, time.Minute)
	assertOneQEMU(t, "linux-vm")
}
