package vm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// writeImage writes an imported image's file where the storage keeps it.
func writeImage(t *testing.T, root, name string, header []byte) {
	t.Helper()
	p := filepath.Join(root, "images", name+".img")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, header, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readyImage(name, path, format string, cdrom bool) *v1alpha2.ClusterVirtualImage {
	return &v1alpha2.ClusterVirtualImage{ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: v1alpha2.ClusterVirtualImageStatus{ImageStatus: v1alpha2.ImageStatus{ImportStatus: v1alpha2.ImportStatus{Phase: v1alpha2.ImageReady},
			Path: path, Format: format, CDROM: cdrom}}}
}

// TestImageFileIsDerived: a launcher gets an image's file from the storage directory and
// the image's name, in the format its header shows; an image whose status.path names
// another file is refused, and so is one whose file is not an imported image, whatever
// its status.format says.
func TestImageFileIsDerived(t *testing.T) {
	root := t.TempDir()
	raw := make([]byte, 1024)
	raw[510], raw[511] = 0x55, 0xaa
	iso := make([]byte, 32769+5)
	copy(iso[32769:], "CD001")
	qcow2 := make([]byte, 512)
	copy(qcow2, "QFI\xfb\x00\x00\x00\x02")
	backed := append([]byte(nil), qcow2...)
	backed[15] = 0x80 // a backing file name's offset
	writeImage(t, root, "raw", raw)
	writeImage(t, root, "iso", iso)
	writeImage(t, root, "qcow2", qcow2)
	writeImage(t, root, "backed", backed)
	own := func(name string) string { return filepath.Join(root, "images", name+".img") }

	for _, tc := range []struct {
		name    string
		img     *v1alpha2.ClusterVirtualImage
		want    string // launcher's --disk value
		refused string // a word of the problem
	}{
		{"raw", readyImage("raw", own("raw"), "raw", false), own("raw") + ":raw:ro", ""},
		{"status.path unset", readyImage("raw", "", "raw", false), own("raw") + ":raw:ro", ""},
		{"iso", readyImage("iso", own("iso"), "iso", true), own("iso") + ":raw:ro:cdrom", ""},
		{"qcow2", readyImage("qcow2", own("qcow2"), "qcow2", false), own("qcow2") + ":qcow2:ro", ""},
		// The format is the file's: a status claiming qcow2 (or a CD-ROM) changes nothing.
		{"status.format rewritten", readyImage("raw", own("raw"), "qcow2", true), own("raw") + ":raw:ro", ""},
		{"status.path /etc/shadow", readyImage("raw", "/etc/shadow", "raw", false), "", `status.path "/etc/shadow"`},
		{"status.path outside the storage", readyImage("raw", "/dev/sda", "raw", false), "", `status.path "/dev/sda"`},
		{"status.path another image", readyImage("raw", own("iso"), "raw", false), "", "is not the image's file"},
		{"status.path with dot-dot", readyImage("raw", root+"/images/../images/raw.img", "raw", false), "", "is not the image's file"},
		{"no file", readyImage("gone", own("gone"), "raw", false), "", "no such file"},
		{"a qcow2 naming a backing file", readyImage("backed", own("backed"), "qcow2", false), "", "backing file"},
	} {
		d, problem := imageFile(root, tc.img, &tc.img.Status.ImageStatus)
		switch {
		case tc.refused == "" && (problem != "" || d.launcherArg() != tc.want):
			t.Errorf("%s: %q, problem %q; want %q", tc.name, d.launcherArg(), problem, tc.want)
		case tc.refused != "" && (d != attachedDisk{} || !strings.Contains(problem, tc.refused) || !strings.Contains(problem, "ClusterVirtualImage "+tc.img.Name)):
			t.Errorf("%s: %+v, problem %q; want the image refused for %q", tc.name, d, problem, tc.refused)
		}
	}
}

// TestDiskFileIsDerived: a launcher gets a disk's file from the storage directory and the
// disk's namespace, name and UID, always as qcow2; a disk whose status.path names another
// file is refused.
func TestDiskFileIsDerived(t *testing.T) {
	own := "/storage/disks/ns/root-0123abcd.qcow2"
	for _, tc := range []struct {
		name    string
		path    string
		refused bool
	}{
		{"its own file", own, false},
		{"status.path unset", "", false},
		{"/etc/shadow", "/etc/shadow", true},
		{"the node's migration key", "/var/lib/ferry/node/migration-tls/tls.key", true},
		{"another tenant's disk", "/storage/disks/other/root-0123abcd.qcow2", true},
	} {
		d := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "root", UID: "0123abcd-ef"},
			Status: v1alpha2.VirtualDiskStatus{ImportStatus: v1alpha2.ImportStatus{Phase: v1alpha2.ImageReady}, Path: tc.path}}
		got, problem := diskFile("/storage", d)
		switch {
		case !tc.refused && (problem != "" || got.launcherArg() != own+":qcow2"):
			t.Errorf("%s: %q, problem %q", tc.name, got.launcherArg(), problem)
		case tc.refused && (got != attachedDisk{} || !strings.Contains(problem, "VirtualDisk root") || !strings.Contains(problem, tc.path)):
			t.Errorf("%s: %+v, problem %q; want the disk refused, naming the path", tc.name, got, problem)
		}
	}
}
