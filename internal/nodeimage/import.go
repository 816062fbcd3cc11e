package nodeimage

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// Namespace is the containerd namespace of the Kubernetes CRI plugin: kubelet sees only
// the images in it.
const Namespace = "k8s.io"

// Import loads ociTar (as Write makes it) into the containerd at containerdAddress (its
// gRPC socket, e.g. /run/containerd/containerd.sock) in the k8s.io namespace with ctr,
// unpacked for the default snapshotter, and checks that the image is then listed under
// the name in the tar's index.json. As root (the socket); needs ctr on PATH.
func Import(ctx context.Context, containerdAddress, ociTar string) error {
	name, err := ImageName(ociTar)
	if err != nil {
		return err
	}
	ctrPath, err := exec.LookPath("ctr")
	if err != nil {
		return fmt.Errorf("importing %s: no ctr on PATH (apt-get install containerd)", ociTar)
	}
	ctr := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, ctrPath, append([]string{"--address", containerdAddress, "--namespace", Namespace}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return out, fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, lastLines(stderr.String()+string(out), 10))
		}
		return out, nil
	}
	// The tar's index.json names the image with io.containerd.image.name, which ctr
	// takes as it is: no --base-name (which would also filter by prefix) and no
	// --index-name. The image is linux/amd64 only: ctr's default platform filter keeps it.
	if _, err := ctr("images", "import", ociTar); err != nil {
		return err
	}
	out, err := ctr("images", "ls", "--quiet", "name=="+name)
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(l) == name {
			return nil
		}
	}
	return fmt.Errorf("ctr imported %s, but lists no image %s in namespace %s (it lists: %q)", ociTar, name, Namespace, strings.TrimSpace(string(out)))
}

// ImageName is the name an OCI image-layout tar gives its image: its index.json's only
// manifest's io.containerd.image.name annotation (or org.opencontainers.image.ref.name).
func ImageName(ociTar string) (string, error) {
	name, _, err := Identify(ociTar)
	return name, err
}

// Identify reads an OCI image-layout tar's image name (as ImageName) and its manifest's
// digest, which changes whenever any of the image's content does.
func Identify(ociTar string) (name, digest string, err error) {
	f, err := os.Open(ociTar)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	// tar.Reader seeks over the blobs it skips: no need to read the layers.
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", "", fmt.Errorf("%s: no index.json (not an OCI image layout)", ociTar)
		}
		if err != nil {
			return "", "", fmt.Errorf("%s: %v", ociTar, err)
		}
		if strings.TrimPrefix(h.Name, "./") != "index.json" {
			continue
		}
		var idx Index
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			return "", "", fmt.Errorf("%s: index.json: %v", ociTar, err)
		}
		if len(idx.Manifests) != 1 {
			return "", "", fmt.Errorf("%s: index.json has %d manifests, expected one", ociTar, len(idx.Manifests))
		}
		m := idx.Manifests[0]
		if n := m.Annotations[AnnotationImageName]; n != "" {
			return n, m.Digest, nil
		}
		if n := m.Annotations[AnnotationRefName]; n != "" {
			return n, m.Digest, nil
		}
		return "", "", fmt.Errorf("%s: index.json names no image", ociTar)
	}
}
