package storage

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// SourceDirsFlag is the controller flag that lists the directories file:// images may be
// read from.
const SourceDirsFlag = "--image-source-dirs"

// CheckSourceDirs refuses a list of file:// source directories that is no list of
// absolute paths.
func CheckSourceDirs(dirs []string) error {
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			return fmt.Errorf("%s: %q is not an absolute path", SourceDirsFlag, d)
		}
	}
	return nil
}

// within tells whether path is dir or below it; both are clean absolute paths.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// openSourceFile opens the file a file:// URL names, if it is a regular file in one of
// dirs (the operator's list) and outside root (the storage: its disks belong to tenants;
// one image is made from another with dataSource.type ObjectRef). Symlinks are followed
// first, and the file must be in a listed directory once they are: a link in a listed
// directory to /etc is refused. The file is then opened through an os.Root of that
// directory, so a symlink swapped in between the check and the open cannot lead out of
// it either. A file that is not there yet (being copied in) is an error tried again; any
// refusal is permanent.
func openSourceFile(dirs []string, root string, u *url.URL) (io.ReadCloser, int64, error) {
	if len(dirs) == 0 {
		return nil, 0, permanent("file:// URLs are refused: the controller reads image files only from the directories its %s lists, and it lists none (use an http:// or https:// URL, or ask the operator to list the image's directory)", SourceDirsFlag)
	}
	if u.Host != "" && u.Host != "localhost" {
		return nil, 0, permanent("dataSource.http.url %s names host %q: a file:// URL is file:///absolute/path", u.Redacted(), u.Host)
	}
	if u.Path == "" || !filepath.IsAbs(u.Path) {
		return nil, 0, permanent("dataSource.http.url %s names no absolute path: a file:// URL is file:///absolute/path", u.Redacted())
	}
	asked := filepath.Clean(u.Path)
	listed := strings.Join(dirs, ", ")
	resolved, missing, err := resolveExisting(asked)
	if err != nil {
		return nil, 0, permanent("reading %s: %w", asked, err)
	}
	if r, err := filepath.EvalSymlinks(root); err == nil && within(r, resolved) {
		return nil, 0, permanent("%s is in the controller's storage, which holds tenants' disks: make an image from another with dataSource.type ObjectRef", asked)
	}
	for _, d := range dirs {
		dir, err := filepath.EvalSymlinks(d)
		if err != nil || !within(dir, resolved) {
			continue
		}
		if missing {
			// Not there yet (being copied in): tried again.
			return nil, 0, fmt.Errorf("reading %s: %w", asked, fs.ErrNotExist)
		}
		rel, err := filepath.Rel(dir, resolved)
		if err != nil {
			continue
		}
		return openInRoot(dir, rel, asked)
	}
	how := ""
	if resolved != asked {
		how = " (through a symlink: it is " + resolved + ")"
	}
	return nil, 0, permanent("%s is outside the directories the controller reads image files from%s (%s %s)", asked, how, SourceDirsFlag, listed)
}

// resolveExisting evaluates the symlinks of the longest part of path that exists and
// joins the rest to it; missing says whether some part did not exist.
func resolveExisting(path string) (string, bool, error) {
	rest := ""
	for p := path; ; {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(r, rest), rest != "", nil
		}
		parent := filepath.Dir(p)
		if !errors.Is(err, fs.ErrNotExist) || parent == p {
			return "", false, err
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
}

// openInRoot opens rel under dir without leaving dir (os.Root), as a regular file.
func openInRoot(dir, rel, asked string) (io.ReadCloser, int64, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", asked, err)
	}
	defer r.Close()
	// O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
	f, err := r.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("reading %s: %w", asked, err)
	}
	if err != nil {
		return nil, 0, permanent("reading %s: %w", asked, err)
	}
	return regularFile(f, asked)
}
