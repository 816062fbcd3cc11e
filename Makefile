# Ferry's build. `make test` is the test command; `make up` sets up and runs a local cluster.
K8S_VERSION := v1.37.2
LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=37 \
	-X github.com/ferryvm/ferry/internal/version.Version=$(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: build generate manifests helm-chart api-diff deps up test vet print-ldflags debian-guest node-bins

# bin/ferry is all of Ferry; bin/ferry-controller, bin/ferry-agent (each node's agent),
# bin/ferry-launcher (each VM's launcher) and bin/ferry-watchdog (each node's watchdog under
# ferry up) are smaller binaries of its processes, without the control plane (nor, the last
# two, any Kubernetes client). Agents and ferry up run them from beside ferry.
build:
	go build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/ferry ./cmd/ferry-controller ./cmd/ferry-agent ./cmd/ferry-launcher ./cmd/ferry-watchdog

# What `ferry up --kubelet=real` runs on each node besides Debian's containerd: kubelet and
# kube-proxy from Ferry's Kubernetes modules, and the pods' sandbox process.
node-bins:
	bash scripts/build-node-bins.sh

generate:
	go tool controller-gen object paths=./api/...
	go tool controller-gen crd paths=./api/... output:crd:artifacts:config=api/crds

# deploy/base/crds is a copy of api/crds for kustomize, which reads no file outside a base's
# directory; test/deploy fails when the copy is stale (run `make generate manifests`). The
# Helm chart, generated from deploy/base, follows.
manifests:
	rm -f deploy/base/crds/*.yaml
	cp api/crds/*.yaml deploy/base/crds/
	{ echo '# Written by `make manifests` from api/crds: do not edit.'; \
	  echo 'apiVersion: kustomize.config.k8s.io/v1beta1'; echo 'kind: Kustomization'; echo 'resources:'; \
	  for f in api/crds/*.yaml; do echo "  - $$(basename $$f)"; done; } > deploy/base/crds/kustomization.yaml
	$(MAKE) --no-print-directory helm-chart

# deploy/helm/ferry, the Helm chart, is generated from the kustomize build of deploy/base
# (internal/helmchart): run after any change to deploy/; test/deploy fails when it is stale.
helm-chart:
	go run ./hack/helmchart

# docs/deckhouse-api.md, Deckhouse's CRD schemas field by field against Ferry's, and the facts
# of Deckhouse's side its test reads offline (internal/apidiff); the test fails when the
# document is stale. DECKHOUSE_MIRROR: a git directory of github.com/deckhouse/virtualization.
DECKHOUSE_MIRROR ?= /work/.mirror/deckhouse+virtualization/repo
api-diff:
	go run ./hack/apidiff -mirror $(DECKHOUSE_MIRROR)

deps:
	bash scripts/setup.sh

up: deps build
	./bin/ferry up

vet:
	go vet ./...
	test -z "$$(gofmt -l api cmd internal test)"

test:
	bash scripts/test.sh

# A Debian 12 cloud image (cloud-init, qemu-guest-agent), cached in /var/cache/ferry/guests
# and rebuilt only when the script changes; prints its path. As root; 3-4 min cold.
debian-guest:
	@bash internal/guestimage/build-debian-guest.sh

# Ferry's image for Kubernetes nodes without Docker or a registry (deploy/image/Dockerfile's
# contents, bin/ferry and bin/ferry-launcher): an OCI image-layout tar that `ctr -n k8s.io
# images import` loads; prints its path. The Debian base layer is cached in
# /var/cache/ferry/images and rebuilt only when internal/nodeimage/build-node-base.sh
# changes (as root, ~1.5 min cold); then only the ferry layer is written (~1 s).
# NODE_IMAGE names it; CONTAINERD=<socket> also imports it.
NODE_IMAGE ?= docker.io/ferryvm/ferry:$(shell git describe --always --dirty 2>/dev/null || echo dev)
.PHONY: node-image
node-image: build
	@go run ./hack/node-image -ref $(NODE_IMAGE) -ferry bin/ferry -out bin/ferry-image.tar $(if $(CONTAINERD),-import $(CONTAINERD))

print-ldflags:
	@echo '$(LDFLAGS)'
