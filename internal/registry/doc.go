// Package registry holds what both ends of an OCI distribution exchange need for disks in
// container images (Deckhouse's dataSource.type ContainerImage, KubeVirt's containerDisk:
// one file under /disk/ in the image's layers): image references, manifests and indexes
// (OCI and Docker v2 media types), the Secrets that carry registry credentials
// (kubernetes.io/dockerconfigjson, kubernetes.io/dockercfg), and the WWW-Authenticate
// challenges of a registry's token flow. It also holds a small read-only registry that
// serves an OCI image layout directory over HTTP (`ferry up` runs one on loopback) and
// Push, which writes a disk file into such a directory as a one-layer image (`ferry
// registry push`).
//
// The pull itself (TLS, credentials, size caps, digest checks, finding the disk file) is
// the image controller's: internal/controller/storage/registry.go.
//
// Hand-written rather than taken from go-containerregistry: Ferry needs a few hundred
// lines of the protocol (GET of manifests and blobs, one token flow, one layout on disk),
// and the pull keeps rules of its own (TLS except on loopback, credentials only for the
// registry they name, the import's size cap on every read, exactly one file under /disk/),
// which are plainer in code of its own than imposed on a general client and its module
// graph. The parsers here are the part a registry or a Secret feeds untrusted bytes to;
// each has a fuzz target.
//
// The package does not know about Kubernetes objects beyond a Secret's type and data.
package registry
