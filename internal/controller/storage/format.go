package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// The formats an image may have once imported.
const (
	FormatQcow2 = "qcow2"
	FormatRaw   = "raw"
	FormatISO   = "iso"
)

// headerSize covers every signature detectFormat looks at: the ISO9660 primary volume
// descriptor starts at 32768 and its "CD001" at 32769.
const headerSize = 32769 + 5

const isoMagicOffset = 32769

// Signatures of formats QEMU knows but Ferry does not take: naming them beats importing
// such a file as a raw disk that boots garbage.
var foreignMagics = []struct {
	offset int
	magic  string
	name   string
}{
	{0, "KDMV", "vmdk"},
	{0, "# Disk DescriptorFile", "vmdk (descriptor)"},
	{0, "conectix", "vpc (vhd)"},
	{0, "QED\x00", "qed"},
	{0, "LUKS\xba\xbe", "luks"},
	{0, "WithoutFreeSpace", "parallels"},
	{0, "WithouFreSpacExt", "parallels"},
	{0, "Bochs Virtual HD Image", "bochs"},
	{0, "\x1f\x8b", "gzip"},
	{0, "\xfd7zXZ\x00", "xz"},
}

// Formats that are imported by converting them to qcow2: self-contained formats whose
// QEMU drivers open no other file. VMDK is not among them: its descriptor lists extent
// files by name.
var convertibleMagics = []struct {
	offset int
	magic  string
	name   string
}{
	{0, "vhdxfile", "vhdx"},
	{64, "\x7f\x10\xda\xbe", "vdi"},
}

// detectFormat tells an image's format from its first bytes alone, so that qemu-img is
// always told the format and never guesses it: a guess is how a "raw" upload that looks
// like qcow2 points a guest at a host file. A file too short for a signature is raw.
// vdi and vhdx are detected to be converted (see convertToQcow2).
func detectFormat(header []byte) (string, error) {
	if bytes.HasPrefix(header, []byte("QFI\xfb")) {
		return FormatQcow2, nil
	}
	for _, m := range convertibleMagics {
		if len(header) >= m.offset+len(m.magic) && string(header[m.offset:m.offset+len(m.magic)]) == m.magic {
			return m.name, nil
		}
	}
	for _, m := range foreignMagics {
		if len(header) >= m.offset+len(m.magic) && string(header[m.offset:m.offset+len(m.magic)]) == m.magic {
			return "", fmt.Errorf("the image is in %s format, which Ferry does not import: convert it to qcow2 (qemu-img convert -O qcow2) or give an uncompressed qcow2, raw, ISO, vdi or vhdx image", m.name)
		}
	}
	if len(header) >= isoMagicOffset+5 && string(header[isoMagicOffset:isoMagicOffset+5]) == "CD001" {
		return FormatISO, nil
	}
	return FormatRaw, nil
}

// qcow2 header fields (docs/interop/qcow2.txt in QEMU), all big-endian.
const (
	qcow2OffVersion       = 4
	qcow2OffBackingOffset = 8
	qcow2OffCryptMethod   = 32
	qcow2OffIncompatible  = 72
	qcow2OffAutoclear     = 88
	qcow2OffHeaderLength  = 100
	qcow2V2HeaderEnd      = 72
	qcow2V3HeaderEnd      = 104

	qcow2IncompatCorrupt  = 1 << 1
	qcow2IncompatDataFile = 1 << 2
	// qcow2AutoclearRawData says the external data file is a raw image of the disk:
	// meaningful only with qcow2IncompatDataFile, refused even without it.
	qcow2AutoclearRawData = 1 << 1
)

// qcow2 header extensions (docs/interop/qcow2.txt): the ones an image may carry. Any
// other is refused: the external data file name (0x44415441), the backing file's format
// (0xe2792aca) and the encryption header (0x0537be77) belong to images that read
// elsewhere or cannot boot, and an extension this list does not know is not trusted to
// mean nothing.
var qcow2AllowedExtensions = map[uint32]string{
	0x6803f857: "feature name table",
	0x23852875: "bitmaps",
}

var qcow2ExtensionNames = map[uint32]string{
	0x44415441: "an external data file name",
	0xe2792aca: "a backing file format name",
	0x0537be77: "an encryption header",
}

// checkQcow2Header refuses, before qemu-img opens the file, a qcow2 image that names
// another file: a backing file or an external data file would make the guest read (or
// write) a file of the host. Encrypted and corrupt images are refused too: no guest
// could boot them.
func checkQcow2Header(h []byte) error {
	if len(h) < qcow2OffIncompatible || !bytes.HasPrefix(h, []byte("QFI\xfb")) {
		return fmt.Errorf("the qcow2 header is truncated")
	}
	version := binary.BigEndian.Uint32(h[qcow2OffVersion:])
	if version != 2 && version != 3 {
		return fmt.Errorf("qcow2 version %d is not supported (2 or 3 are)", version)
	}
	if binary.BigEndian.Uint64(h[qcow2OffBackingOffset:]) != 0 {
		return fmt.Errorf("the qcow2 image has a backing file: an image must hold all its data; flatten it with qemu-img convert -O qcow2")
	}
	if binary.BigEndian.Uint32(h[qcow2OffCryptMethod:]) != 0 {
		return fmt.Errorf("the qcow2 image is encrypted: give an unencrypted image")
	}
	if version == 2 {
		return checkQcow2Extensions(h)
	}
	if len(h) < qcow2V3HeaderEnd {
		return fmt.Errorf("the qcow2 header is truncated")
	}
	incompat := binary.BigEndian.Uint64(h[qcow2OffIncompatible:])
	if incompat&qcow2IncompatDataFile != 0 || binary.BigEndian.Uint64(h[qcow2OffAutoclear:])&qcow2AutoclearRawData != 0 {
		return fmt.Errorf("the qcow2 image has an external data file: an image must hold all its data; convert it with qemu-img convert -O qcow2")
	}
	if incompat&qcow2IncompatCorrupt != 0 {
		return fmt.Errorf("the qcow2 image is marked corrupt: repair it with qemu-img check -r all")
	}
	return checkQcow2Extensions(h)
}

// checkQcow2Extensions walks a qcow2 header's extensions, which start right after the
// header (at 72 for version 2, at header_length for version 3) and end with type 0, and
// refuses any but qcow2AllowedExtensions. A name QEMU would find there (a data file's, a
// backing format's) is refused even when no header bit says to use it. The extensions
// must end within h (the first 32 KiB): qemu-img's own are a few hundred bytes.
func checkQcow2Extensions(h []byte) error {
	off := uint64(qcow2V2HeaderEnd)
	if binary.BigEndian.Uint32(h[qcow2OffVersion:]) == 3 {
		off = uint64(binary.BigEndian.Uint32(h[qcow2OffHeaderLength:]))
		if off < qcow2V3HeaderEnd || off%8 != 0 {
			return fmt.Errorf("the qcow2 header length %d is invalid", off)
		}
	}
	for {
		if off+8 > uint64(len(h)) {
			return fmt.Errorf("the qcow2 header extensions do not end within the first %d bytes", len(h))
		}
		typ := binary.BigEndian.Uint32(h[off:])
		length := uint64(binary.BigEndian.Uint32(h[off+4:]))
		if typ == 0 {
			return nil
		}
		if _, ok := qcow2AllowedExtensions[typ]; !ok {
			name, known := qcow2ExtensionNames[typ]
			if !known {
				name = fmt.Sprintf("an unknown extension (0x%08x)", typ)
			}
			return fmt.Errorf("the qcow2 header holds %s: an image must hold all its data in itself; convert it with qemu-img convert -O qcow2", name)
		}
		off += 8 + (length+7)/8*8
	}
}

// readHeader reads as much of the file's first headerSize bytes as there are.
func readHeader(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, headerSize)
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, err
	}
	return buf[:n], nil
}
