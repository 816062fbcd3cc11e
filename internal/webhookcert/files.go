package webhookcert

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// dataLink points at the directory that holds the current certificate and key; the files
// the webhook server reads are links through it (as the kubelet lays out a Secret volume).
const dataLink = "..data"

// readPair reads the certificate and key files (nil, nil if either is missing).
func readPair(dir, certName, keyName string) (certPEM, keyPEM []byte, err error) {
	certPEM, err = os.ReadFile(filepath.Join(dir, certName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = os.ReadFile(filepath.Join(dir, keyName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	return certPEM, keyPEM, err
}

// writePair replaces the certificate and key in dir at once. Writing two files one after
// the other would let controller-runtime's certificate watcher, woken by the first, read a
// certificate with the other's key (it keeps the old pair then, but logs an error at every
// rotation). Instead both go into a new directory and the link ..data is switched to it by
// a rename; the old directory is removed afterwards, which wakes the watcher (it watches
// the files the links led to) to read the new pair.
func writePair(dir, certName, keyName string, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fresh, err := os.MkdirTemp(dir, "..pair-")
	if err != nil {
		return err
	}
	if err := writeSynced(filepath.Join(fresh, keyName), keyPEM, 0o600); err != nil {
		os.RemoveAll(fresh)
		return err
	}
	if err := writeSynced(filepath.Join(fresh, certName), certPEM, 0o644); err != nil {
		os.RemoveAll(fresh)
		return err
	}
	old, _ := os.Readlink(filepath.Join(dir, dataLink))
	if err := replaceLink(dir, dataLink, filepath.Base(fresh)); err != nil {
		os.RemoveAll(fresh)
		return err
	}
	for _, name := range []string{certName, keyName} {
		want := filepath.Join(dataLink, name)
		if got, err := os.Readlink(filepath.Join(dir, name)); err == nil && got == want {
			continue
		}
		// First write, or files of another layout: the name becomes a link through ..data.
		if err := replaceLink(dir, name, want); err != nil {
			return err
		}
	}
	if strings.HasPrefix(old, "..pair-") && old != filepath.Base(fresh) {
		return os.RemoveAll(filepath.Join(dir, filepath.Base(old)))
	}
	return nil
}

// replaceLink makes dir/name a symbolic link to target, atomically.
func replaceLink(dir, name, target string) error {
	tmp := filepath.Join(dir, name+".tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

func writeSynced(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
