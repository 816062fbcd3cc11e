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
	if version == 3 {
		binary.BigEndian.PutUint32(h[qcow2OffHeaderLength:], qcow2V3HeaderEnd)
	}
	return h
}

// withExtension appends a header extension of type typ holding data after the v3
// header's last one (the header must hold no extension but the end marker yet).
func withExtension(h []byte, typ uint32, data string) []byte {
	h = append([]byte(nil), h...)
	off := int(binary.BigEndian.Uint32(h[qcow2OffHeaderLength:]))
	for binary.BigEndian.Uint32(h[off:]) != 0 {
		off += 8 + (int(binary.BigEndian.Uint32(h[off+4:]))+7)/8*8
	}
	binary.BigEndian.PutUint32(h[off:], typ)
	binary.BigEndian.PutUint32(h[off+4:], uint32(len(data)))
	copy(h[off+8:], data)
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
	rawDataBit := qcow2Header(3, 0, 0)
	binary.BigEndian.PutUint64(rawDataBit[qcow2OffAutoclear:], qcow2AutoclearRawData)
	shortLength := qcow2Header(3, 0, 0)
	binary.BigEndian.PutUint32(shortLength[qcow2OffHeaderLength:], 72)
	for _, tc := range []struct {
		name   string
		header []byte
		err    string
	}{
		{"plain v3", qcow2Header(3, 0, 0), ""},
		{"plain v2", qcow2Header(2, 0, 0), ""},
		{"v2 cut after its header", qcow2Header(2, 0, 0)[:72], "do not end"},
		{"feature name table", withExtension(qcow2Header(3, 0, 0), 0x6803f857, strings.Repeat("x", 48)), ""},
		{"data file named, bit clear", withExtension(qcow2Header(3, 0, 0), 0x44415441, "/dev/sda"), "external data file name"},
		{"data file after a feature table", withExtension(withExtension(qcow2Header(3, 0, 0), 0x6803f857, "abc"), 0x44415441, "/etc/ferry/migration-tls/tls.key"), "external data file name"},
		{"backing format named", withExtension(qcow2Header(3, 0, 0), 0xe2792aca, "raw"), "backing file format"},
		{"unknown extension", withExtension(qcow2Header(3, 0, 0), 0x12345678, "?"), "unknown extension"},
		{"raw external data", rawDataBit, "external data file"},
		{"header length too short", shortLength, "header length"},
		{"extensions run off the end", withExtension(qcow2Header(3, 0, 0), 0x6803f857, strings.Repeat("x", 400)), "do not end"},
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

// FuzzCheckQcow2Header: whatever the header, one that passes names no backing file, no
// external data file and carries no header extension but the allowed ones (walked here
// apart from the checker's own walk, with its own bounds).
func FuzzCheckQcow2Header(f *testing.F) {
	f.Add(qcow2Header(3, 0, 0))
	f.Add(qcow2Header(2, 0, 0))
	f.Add(withExtension(qcow2Header(3, 0, 0), 0x6803f857, "dirty bit"))
	f.Add(withExtension(withExtension(qcow2Header(3, 0, 0), 0x23852875, "12345678"), 0x44415441, "/dev/sda"))
	f.Add(withExtension(qcow2Header(3, 0, 0), 0xe2792aca, "raw"))
	f.Fuzz(func(t *testing.T, h []byte) {
		if checkQcow2Header(h) != nil {
			return
		}
		be := binary.BigEndian
		version := be.Uint32(h[4:])
		if be.Uint64(h[8:]) != 0 || be.Uint32(h[32:]) != 0 || (version != 2 && version != 3) {
			t.Fatalf("passed with a backing file, encryption or version %d", version)
		}
		start := 72
		if version == 3 {
			if be.Uint64(h[72:])&(qcow2IncompatDataFile|qcow2IncompatCorrupt) != 0 || be.Uint64(h[88:])&qcow2AutoclearRawData != 0 {
				t.Fatalf("passed with a data file or corrupt bit")
			}
			start = int(be.Uint32(h[100:]))
		}
		for off := start; ; {
			if off < 0 || off+8 > len(h) {
				t.Fatalf("passed with extensions that run past the header (at %d of %d)", off, len(h))
			}
			typ := be.Uint32(h[off:])
			if typ == 0 {
				return
			}
			if typ != 0x6803f857 && typ != 0x23852875 {
				t.Fatalf("passed with header extension 0x%08x", typ)
			}
			off += 8 + (int(be.Uint32(h[off+4:]))+7)/8*8
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

// TestInspectRefusesAHugeVirtualSize: a small qcow2 whose header claims 4 EiB is refused
// (qemu-img says it is too big) and no disk is ever made from it.
func TestInspectRefusesAHugeVirtualSize(t *testing.T) {
	p := filepath.Join(t.TempDir(), "huge.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", p, "1M")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint64(b[24:], 4<<60) // the header's size field
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	info, err := inspect(context.Background(), p)
	if err == nil {
		t.Fatalf("a 4 EiB qcow2 passed: %+v", info)
	}
	t.Logf("4 EiB: %v", err)
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
