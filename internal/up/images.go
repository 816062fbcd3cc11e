package up

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/ferryvm/ferry/internal/nodeimage"
	"github.com/ferryvm/ferry/internal/realnode"
)

// pauseImage is the pods' sandbox image on real-kubelet nodes (cmd/ferry-pause): no
// registry serves one here.
const pauseImage = "docker.io/ferryvm/ferry-pause:1.0"

// nodeImages writes the images real-kubelet nodes load, under <state>/images: Ferry's,
// named image as deploy/base names it, with this very binary (exe) in it, and the pause
// image. It returns them and the pause image's reference.
func nodeImages(ctx context.Context, stateDir, exe, image string, say func(string, ...any)) ([]realnode.Image, string, error) {
	pause := filepath.Join(filepath.Dir(exe), "ferry-pause")
	if !isExecutable(pause) {
		return nil, "", fmt.Errorf("no %s: build it with `make node-bins`", pause)
	}
	t := time.Now()
	if _, err := nodeimage.EnsureBase(ctx, sayWriter(say, "  base image: ")); err != nil {
		return nil, "", err
	}
	dir := filepath.Join(stateDir, "images")
	ferryTar, pauseTar := filepath.Join(dir, "ferry.oci.tar"), filepath.Join(dir, "pause.oci.tar")
	if err := nodeimage.Write(ctx, ferryTar, image, exe); err != nil {
		return nil, "", fmt.Errorf("writing Ferry's image: %w", err)
	}
	if err := nodeimage.WritePause(ctx, pauseTar, pauseImage, pause); err != nil {
		return nil, "", fmt.Errorf("writing the pause image: %w", err)
	}
	var out []realnode.Image
	for _, tar := range []string{ferryTar, pauseTar} {
		name, digest, err := nodeimage.Identify(tar)
		if err != nil {
			return nil, "", err
		}
		out = append(out, realnode.Image{Ref: name, Archive: tar, Digest: digest})
	}
	say("Images ready in %.1fs: %s, %s", time.Since(t).Seconds(), out[0].Ref, out[1].Ref)
	return out, pauseImage, nil
}

// sayWriter passes what a build prints to say, line by line.
func sayWriter(say func(string, ...any), prefix string) io.Writer {
	return &lineWriter{say: say, prefix: prefix}
}

type lineWriter struct {
	say    func(string, ...any)
	prefix string
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.say("%s%s", w.prefix, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}
