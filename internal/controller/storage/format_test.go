package storage

import (
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func qcow2Header(version uint32, backing uint64, incompat uint64) []byte {
	h := make([]byte, 512)
	copy(h, "QFI\xfb")
	binary.BigEndian.PutUint32(h[4:], version)
	binary.BigEndian.PutUint64(h[8:], backing)
	binary.BigEndian.PutUint64(h[72:], incompat)
	return h
}

func isoHeader() []byte {
	h := make([]byte, headerSize)
	copy(h[isoMagicOffset:], "CD001")
	return h
}

func TestDetectFormat(t *testing.T) {
	vdi := make([]byte, 128)
	copy(vdi[64:], "\x7f\x10\xda\xbe")
	for _, tc := range []struct {
		name, want, err string
		header          []byte
	}{
		{"qcow2", FormatQcow2, "", qcow2Header(3, 0, 0)},
		{"iso", FormatISO, "", isoHeader()},
		{"raw", FormatRaw, "", make([]byte, headerSize)},
		{"empty", FormatRaw, "", nil},
		{"short", FormatRaw, "", []byte("QFI")},
		{"iso magic cut off", FormatRaw, "", isoHeader()[:isoMagicOffset+4]},
		{"vmdk", "", "vmdk", []byte("KDMV\x01\x00\x00\x00")},
		{"vhdx", "vhdx", "", []byte("vhdxfile....")},
		{"vdi", "vdi", "", vdi},
		{"vpc", "", "vpc", []byte("conectix")},
		{"gzip", "", "gzip", []byte("\x1f\x8b\x08\x00")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := detectFormat(tc.header)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %q, %v; want an error naming %s", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestCheckQcow2Header(t *testing.T) {
	crypt := qcow2Header(3, 0, 0)
	binary.BigEndian.PutUint32(crypt[32:], 2)
	for _, tc := range []struct {
		name   string
		header []byte
		err    string
	}{
		{"plain v3", qcow2Header(3, 0, 0), ""},
		{"plain v2", qcow2Header(2, 0, 0)[:72], ""},
		{"backing file", qcow2Header(3, 0x200, 0), "backing file"},
		{"data file", qcow2Header(3, 0, qcow2IncompatDataFile), "external data file"},
		{"corrupt", qcow2Header(3, 0, qcow2IncompatCorrupt), "corrupt"},
		{"encrypted", crypt, "encrypted"},
		{"version 4", qcow2Header(4, 0, 0), "version 4"},
		{"truncated v3", qcow2Header(3, 0, 0)[:80], "truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkQcow2Header(tc.header)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("got %v, want %q", err, tc.err)
			}
		})
	}
}

func FuzzDetectFormat(f *testing.F) {
	f.Add(qcow2Header(3, 0, 0))
	f.Add(qcow2Header(3, 8, qcow2IncompatDataFile))
	f.Add(qcow2Header(2, 0, 0)[:72])
	f.Add(isoHeader())
	f.Add([]byte("KDMV"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, header []byte) {
		format, err := detectFormat(header)
		if err != nil {
			return
		}
		switch format {
		case FormatQcow2:
			if !strings.HasPrefix(string(header), "QFI\xfb") {
				t.Fatalf("qcow2 without its magic")
			}
			// A header that passes must name no other file.
			if checkQcow2Header(header) == nil && len(header) >= 16 && binary.BigEndian.Uint64(header[8:]) != 0 {
				t.Fatalf("a backing file offset passed the check")
			}
		case FormatISO, FormatRaw, "vdi", "vhdx":
		default:
			t.Fatalf("unknown format %q", format)
		}
	})
}

func FuzzParseQemuInfo(f *testing.F) {
	f.Add([]byte(`{"format":"qcow2","virtual-size":1048576,"actual-size":200704}`), "qcow2")
	f.Add([]byte(`{"format":"qcow2","virtual-size":1,"backing-filename":"/etc/shadow"}`), "qcow2")
	f.Add([]byte(`{"format":"qcow2","virtual-size":1,"format-specific":{"type":"qcow2","data":{"data-file":"/dev/sda"}}}`), "qcow2")
	f.Add([]byte(`{"format":"raw","virtual-size":512}`), "raw")
	f.Add([]byte(`{`), "raw")
	f.Fuzz(func(t *testing.T, out []byte, format string) {
		qi, err := parseQemuInfo(out, format)
		if err != nil {
			return
		}
		if qi.BackingFilename != "" || qi.FullBackingFilename != "" || qi.Encrypted || qi.VirtualSize <= 0 || qi.Format != format {
			t.Fatalf("accepted %+v", qi)
		}
		if qi.FormatSpecific != nil && (qi.FormatSpecific.Data.DataFile != "" || qi.FormatSpecific.Data.Corrupt) {
			t.Fatalf("accepted %+v", qi.FormatSpecific)
		}
	})
}

// qemuImg runs the real qemu-img to make test images.
func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func TestInspectRefusesImagesThatNameHostFiles(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	qemuImg(t, "create", "-q", "-f", "raw", base, "1M")
	backed := filepath.Join(dir, "backed.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", backed)
	dataFile := filepath.Join(dir, "data.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "data.bin"), dataFile, "1M")
	for path, want := range map[string]string{backed: "backing file", dataFile: "external data file"} {
		_, err := inspect(context.Background(), path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want a refusal naming the %s", filepath.Base(path), err, want)
		}
	}
	// qemu-img's own reading refuses them too, should a header trick pass the first check.
	for path, want := range map[string]string{backed: "backing file", dataFile: "external data file"} {
		out, err := exec.Command("qemu-img", "info", "-U", "-f", "qcow2", "--output=json", path).Output()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseQemuInfo(out, "qcow2"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: parseQemuInfo gave %v, want a refusal naming the %s", filepath.Base(path), err, want)
		}
	}
}

func TestInspectFormats(t *testing.T) {
	dir := t.TempDir()
	q := filepath.Join(dir, "plain.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", q, "3M")
	raw := filepath.Join(dir, "disk.raw")
	b := make([]byte, 2<<20)
	b[510], b[511] = 0x55, 0xAA
	if err := os.WriteFile(raw, b, 0o644); err != nil {
		t.Fatal(err)
	}
	iso := filepath.Join(dir, "cd.iso")
	b = make([]byte, 64<<10)
	copy(b[isoMagicOffset:], "CD001")
	if err := os.WriteFile(iso, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]imageInfo{q: {Format: "qcow2", VirtualSize: 3 << 20}, raw: {Format: "raw", VirtualSize: 2 << 20}, iso: {Format: "iso", VirtualSize: 64 << 10}} {
		got, err := inspect(context.Background(), path)
		if err != nil || got.Format != want.Format || got.VirtualSize != want.VirtualSize {
			t.Errorf("%s: got %+v, %v; want %+v", filepath.Base(path), got, err, want)
		}
	}
}

// TestInspectRealISO uses genisoimage (scripts/setup.sh installs it): a real ISO9660 image,
// not only its signature.
func TestInspectRealISO(t *testing.T) {
	if _, err := exec.LookPath("genisoimage"); err != nil {
		t.Fatal("genisoimage is not installed: run scripts/setup.sh (it installs genisoimage)")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	iso := filepath.Join(t.TempDir(), "real.iso")
	if out, err := exec.Command("genisoimage", "-quiet", "-V", "TEST", "-o", iso, dir).CombinedOutput(); err != nil {
		t.Fatalf("genisoimage: %v: %s", err, out)
	}
	info, err := inspect(context.Background(), iso)
	if err != nil || info.Format != FormatISO {
		t.Fatalf("got %+v, %v; want an iso", info, err)
	}
}

// TestOverlayGrowsToTheDiskSize: a disk made from a small image is as large as asked,
// for a raw and a qcow2 image.
func TestOverlayGrowsToTheDiskSize(t *testing.T) {
	dir := t.TempDir()
	q := filepath.Join(dir, "img.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", q, "1M")
	raw := filepath.Join(dir, "img.raw")
	qemuImg(t, "create", "-q", "-f", "raw", raw, "1M")
	for base, format := range map[string]string{q: "qcow2", raw: "raw"} {
		disk := base + ".disk"
		if err := createOverlay(context.Background(), disk, base, format, 64<<20); err != nil {
			t.Fatal(err)
		}
		size, err := diskSize(context.Background(), disk)
		if err != nil || size != 64<<20 {
			t.Errorf("disk of a %s image: %d bytes, %v; want 64 MiB", format, size, err)
		}
	}
}

// TestConvertVdiAndVhdx: vdi and vhdx images become qcow2 of the same size.
func TestConvertVdiAndVhdx(t *testing.T) {
	for _, format := range []string{"vdi", "vhdx"} {
		p := filepath.Join(t.TempDir(), "img."+format)
		qemuImg(t, "create", "-q", "-f", format, p, "4M")
		if err := convertToQcow2(context.Background(), p); err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		info, err := inspect(context.Background(), p)
		if err != nil || info.Format != FormatQcow2 || info.VirtualSize != 4<<20 {
			t.Errorf("%s converted: %+v, %v; want a 4 MiB qcow2", format, info, err)
		}
	}
}
