// Package deploy carries Ferry's kustomize base into the binary: `ferry up --kubelet=real`
// installs Ferry on its real-kubelet nodes from deploy/base, as a user would on any
// cluster.
package deploy

import "embed"

// Base is the directory base/ (kustomization.yaml and everything it names).
//
//go:embed base
var Base embed.FS
