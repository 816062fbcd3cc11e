#!/usr/bin/env bash
# The test suite: unit and controller tests (against a real kube-apiserver and etcd run
# from bin/ferry), then end-to-end tests on `ferry up` with real QEMU guests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# envtest runs binaries named kube-apiserver and etcd: bin/ferry is both.
mkdir -p bin/envtest
ln -sf ../ferry bin/envtest/kube-apiserver
ln -sf ../ferry bin/envtest/etcd
export KUBEBUILDER_ASSETS=$PWD/bin/envtest
export FERRY_BIN=$PWD/bin/ferry

echo "== go vet, gofmt"
go vet ./...
bad=$(gofmt -l api cmd internal test)
[[ -z $bad ]] || { echo "gofmt would change: $bad" >&2; exit 1; }

ldflags=$(make --no-print-directory -s print-ldflags)
# Every package of the product runs under the race detector (they all run goroutines, or
# call code that does); test/deploy, which runs the built binary's controller and agents
# against the embedded control plane, and checks the Helm chart deploy/helm/ferry (that it
# is what `make helm-chart` writes now, and that helm from setup.sh renders and lints it),
# runs after them without it.
echo "== unit and controller tests, under the race detector"
go test -ldflags "$ldflags" -race -count=1 $(go list ./... | grep -v -e /test/)
echo "== deploy/'s manifests against the embedded control plane"
go test -ldflags "$ldflags" -count=1 ./test/deploy/...

echo "== end-to-end tests on ferry up with real guests"
go test -count=1 -timeout 55m -v ./test/e2e/...

echo "== the seed's scenarios and deploy/'s install, upgrade and uninstall on real kubelets (ferry up --kubelet=real)"
go test -count=1 -timeout 20m -v ./test/realkubelet/...

echo "== a short chaos run on simulated nodes (every fault once; ferry-bench chaos runs more)"
go test -count=1 -timeout 15m -v ./test/chaos/...
