package storage

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"path"
	"strings"

	"github.com/ferryvm/ferry/internal/registry"
)

// errNoDisk: an image that is no containerDisk.
var errNoDisk = errors.New("the image holds no file under /disk/: a disk image is built FROM scratch with COPY <disk file> /disk/")

// openDisk reads the image's layers in order up to the file under disk/ and returns a
// stream of that file and its length. The stream reads the rest of the layers after the
// file's last byte, and returns EOF only if they hold no second file under disk/ and every
// layer's digest matched.
func (p *puller) openDisk(ctx context.Context, layers []registry.Descriptor) (io.ReadCloser, int64, error) {
	s := &diskStream{ctx: ctx, p: p, layers: layers, budget: p.maxSize + p.slack()}
	hdr, err := s.findDisk()
	if err != nil {
		s.Close()
		return nil, 0, err
	}
	if hdr.Size > p.maxSize {
		s.Close()
		return nil, 0, permanent("%s: the disk file %s is %s, more than the controller's limit of %s (--max-image-size)", p.ref, hdr.Name, humanBytes(hdr.Size), humanBytes(p.maxSize))
	}
	s.reading = true
	return s, hdr.Size, nil
}

// diskStream walks the tar entries of an image's layers, one layer open at a time.
type diskStream struct {
	ctx    context.Context
	p      *puller
	layers []registry.Descriptor
	next   int // the next layer to open
	cur    *openLayer
	// budget is what the layers' tar streams may still unpack to.
	budget int64
	// disk is the disk file's name once found; reading is true while Read returns its bytes.
	disk    string
	reading bool
}

type openLayer struct {
	desc registry.Descriptor
	blob *verifiedBlob
	// unpacked is the tar stream: the blob, gunzipped if need be, within the budget.
	unpacked io.Reader
	tar      *tar.Reader
}

func (s *diskStream) Read(b []byte) (int, error) {
	if !s.reading {
		return 0, io.EOF
	}
	n, err := s.cur.tar.Read(b)
	switch {
	case err == io.EOF:
		s.reading = false
		if err := s.finish(); err != nil {
			return n, err
		}
		return n, io.EOF
	case err != nil:
		return n, s.layerError(err)
	}
	return n, nil
}

func (s *diskStream) Close() error {
	if s.cur == nil {
		return nil
	}
	err := s.cur.blob.Close()
	s.cur = nil
	return err
}

// findDisk reads up to the disk file's tar header.
func (s *diskStream) findDisk() (*tar.Header, error) {
	for {
		hdr, err := s.nextEntry()
		if err == io.EOF {
			return nil, permanent("%s: %w", s.p.ref, errNoDisk)
		}
		if err != nil {
			return nil, err
		}
		ok, err := s.isDisk(hdr)
		if err != nil {
			return nil, err
		}
		if ok {
			s.disk = hdr.Name
			return hdr, nil
		}
	}
}

// finish reads what follows the disk file to the end of the last layer.
func (s *diskStream) finish() error {
	for {
		hdr, err := s.nextEntry()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := s.isDisk(hdr); err != nil {
			return err
		}
	}
}

// isDisk tells whether an entry is the disk: a regular file directly under disk/. Any
// other kind of file there is refused, and so is a second file.
func (s *diskStream) isDisk(hdr *tar.Header) (bool, error) {
	name := path.Clean("/" + hdr.Name)
	if path.Dir(name) != "/disk" || strings.HasPrefix(path.Base(name), ".wh.") || hdr.Typeflag == tar.TypeDir {
		return false, nil
	}
	if hdr.Typeflag != tar.TypeReg {
		return false, permanent("%s: %s in the image is no regular file (tar type %q): the disk must be one", s.p.ref, hdr.Name, hdr.Typeflag)
	}
	if s.disk != "" {
		return false, permanent("%s: the image holds more than one file under /disk/ (%s, %s): it must hold only the disk", s.p.ref, s.disk, hdr.Name)
	}
	return true, nil
}

// nextEntry is the next tar header across the layers; io.EOF after the last layer.
func (s *diskStream) nextEntry() (*tar.Header, error) {
	for {
		if s.cur == nil {
			if s.next == len(s.layers) {
				return nil, io.EOF
			}
			if err := s.openLayer(s.layers[s.next]); err != nil {
				return nil, err
			}
			s.next++
		}
		hdr, err := s.cur.tar.Next()
		if err == io.EOF {
			if err := s.closeLayer(); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, s.layerError(err)
		}
		return hdr, nil
	}
}

func (s *diskStream) openLayer(d registry.Descriptor) error {
	rc, err := s.p.blob(s.ctx, d)
	if err != nil {
		return err
	}
	blob := rc.(*verifiedBlob)
	s.cur = &openLayer{desc: d, blob: blob, unpacked: blob}
	if layerCompression(d.MediaType) == "gzip" {
		zr, err := gzip.NewReader(blob)
		if err != nil {
			return s.layerError(err)
		}
		s.cur.unpacked = zr
	}
	s.cur.unpacked = &budgetReader{r: s.cur.unpacked, s: s}
	s.cur.tar = tar.NewReader(s.cur.unpacked)
	return nil
}

// closeLayer reads the layer to its end, which checks its digest, and closes it.
func (s *diskStream) closeLayer() error {
	if _, err := io.Copy(io.Discard, s.cur.unpacked); err != nil {
		return s.layerError(err)
	}
	if _, err := io.Copy(io.Discard, s.cur.blob); err != nil {
		return s.layerError(err)
	}
	return s.Close()
}

// layerError says what went wrong in the current layer: the registry's bytes as the blob
// reader judged them (a digest mismatch, a dropped connection), else the layer's format.
func (s *diskStream) layerError(err error) error {
	if s.cur != nil && s.cur.blob.err != nil {
		return s.cur.blob.err
	}
	if isPermanent(err) || errors.Is(err, context.Canceled) {
		return err
	}
	return permanent("%s: layer %s is no valid %s: %v", s.p.ref, s.cur.desc.Digest, s.cur.desc.MediaType, err)
}

// budgetReader stops a layer that unpacks to more than the whole image may.
type budgetReader struct {
	r io.Reader
	s *diskStream
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if int64(len(p)) > b.s.budget+1 {
		p = p[:b.s.budget+1]
	}
	n, err := b.r.Read(p)
	if int64(n) > b.s.budget {
		return 0, permanent("%s: the image's layers unpack to more than %s, the controller's limit (--max-image-size) and %s besides", b.s.p.ref, humanBytes(b.s.p.maxSize), humanBytes(b.s.p.slack()))
	}
	b.s.budget -= int64(n)
	return n, err
}
