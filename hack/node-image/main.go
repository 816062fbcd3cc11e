// Command node-image writes Ferry's node image as an OCI image-layout tar (see
// internal/nodeimage): the cached Debian base layer, built first when missing (as root),
// and the given ferry binary. It prints the tar's path; with -import, it also loads the
// image into that containerd's k8s.io namespace. `make node-image` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ferryvm/ferry/internal/nodeimage"
)

func main() {
	ref := flag.String("ref", "", "image reference, with a tag (e.g. docker.io/ferryvm/ferry:0.2.0)")
	ferry := flag.String("ferry", "bin/ferry", "the ferry binary to put in the image, with the ferry-launcher beside it")
	out := flag.String("out", "bin/ferry-image.tar", "where to write the OCI image-layout tar")
	imp := flag.String("import", "", "containerd address to import the image into (k8s.io namespace); empty: no import")
	flag.Parse()
	if *ref == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *ref, *ferry, *out, *imp); err != nil {
		fmt.Fprintln(os.Stderr, "node-image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, ref, ferry, out, imp string) error {
	start := time.Now()
	base, err := nodeimage.EnsureBase(ctx, os.Stderr)
	if err != nil {
		return err
	}
	name, err := nodeimage.NormalizeRef(ref)
	if err != nil {
		return err
	}
	t := time.Now()
	if err := nodeimage.Write(ctx, out, ref, ferry); err != nil {
		return err
	}
	fi, err := os.Stat(out)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "node-image: %s: base %s (%s), image written in %.1f s, %d MiB\n",
		name, filepath.Base(base), t.Sub(start).Round(100*time.Millisecond), time.Since(t).Seconds(), fi.Size()>>20)
	if imp != "" {
		t = time.Now()
		if err := nodeimage.Import(ctx, imp, out); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "node-image: imported into %s (namespace %s) in %.1f s\n", imp, nodeimage.Namespace, time.Since(t).Seconds())
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	fmt.Println(abs)
	return nil
}
