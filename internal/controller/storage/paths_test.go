package storage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func TestPathsComeFromIdentity(t *testing.T) {
	if got, want := ImagePath("/s", "debian"), "/s/images/debian.img"; got != want {
		t.Errorf("ImagePath = %s, want %s", got, want)
	}
	d := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "root", UID: "0123456789abcdef"}}
	if got, want := DiskPath("/s", d), "/s/disks/ns/root-01234567.qcow2"; got != want {
		t.Errorf("DiskPath = %s, want %s", got, want)
	}
	d.Status.Path = "/etc/shadow"
	if got := DiskPath("/s", d); got != "/s/disks/ns/root-01234567.qcow2" {
		t.Errorf("DiskPath follows status.path: %s", got)
	}
}

// TestImageFormat: an imported image's format is read from its file's header; a file that
// is no imported image (a link, a device, a qcow2 naming a backing file, a vmdk) is
// refused, whatever its name.
func TestImageFormat(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	raw := make([]byte, 4096)
	raw[510], raw[511] = 0x55, 0xaa
	for _, tc := range []struct {
		path string
		want string // format, or a word of the error
		ok   bool
	}{
		{write("qcow2.img", qcow2Header(3, 0, 0)), FormatQcow2, true},
		{write("raw.img", raw), FormatRaw, true},
		{write("iso.img", isoHeader()), FormatISO, true},
		{write("backed.img", qcow2Header(3, 512, 0)), "backing file", false},
		{write("datafile.img", qcow2Header(3, 0, qcow2IncompatDataFile)), "external data file", false},
		{write("vmdk.img", []byte("KDMV")), "vmdk", false},
		{write("vdi.img", append(make([]byte, 64), "\x7f\x10\xda\xbe"...)), "vdi", false},
		{filepath.Join(dir, "missing.img"), "no such file", false},
		{"/dev/null", "not a regular file", false},
	} {
		got, err := ImageFormat(tc.path)
		switch {
		case tc.ok && (err != nil || got != tc.want):
			t.Errorf("%s: %q, %v; want %s", filepath.Base(tc.path), got, err, tc.want)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %q, %v; want an error about %q", filepath.Base(tc.path), got, err, tc.want)
		}
	}
	link := filepath.Join(dir, "link.img")
	if err := os.Symlink(filepath.Join(dir, "raw.img"), link); err != nil {
		t.Fatal(err)
	}
	if got, err := ImageFormat(link); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a symlink: %q, %v; want it refused", got, err)
	}
}

// TestImportTempFilesAreTheImagesOwn: the clean-up of one image's cut-short imports never
// matches the temporary file of another image whose name starts with the first's.
func TestImportTempFilesAreTheImagesOwn(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"dev-sda-no-bit", "dev-sda.x", "dev-sda1"} {
		f, err := os.CreateTemp(dir, importTempPattern(name))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if got, err := filepath.Glob(filepath.Join(dir, importTempPattern("dev-sda"))); err != nil || len(got) != 0 {
		t.Errorf("image dev-sda's clean-up matches %q (%v)", got, err)
	}
	if got, _ := filepath.Glob(filepath.Join(dir, importTempPattern("dev-sda-no-bit"))); len(got) != 1 {
		t.Errorf("image dev-sda-no-bit's clean-up matches %q, want its own file", got)
	}
}
