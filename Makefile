# Ferry's build. `make test` is the test command; `make up` sets up and runs a local cluster.
K8S_VERSION := v1.37.2
LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=37 \
	-X github.com/ferryvm/ferry/internal/version.Version=$(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: build generate manifests helm-chart deps up test vet print-ldflags debian-guest

build:
	go build -ldflags "$(LDFLAGS)" -o bin/ferry ./cmd/ferry

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

print-ldflags:
	@echo '$(LDFLAGS)'
