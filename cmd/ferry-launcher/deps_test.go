package main

import (
	"os/exec"
	"strings"
	"testing"
)

// forbidden are what the light binaries must not link: Kubernetes' control plane and
// clients, controller-runtime (but its logging), and the API types, whose init work is
// what makes a process of the whole ferry binary cost ~100 MiB.
var forbidden = []string{
	"k8s.io/apiserver",
	"k8s.io/kubernetes",
	"go.etcd.io/",
	"k8s.io/client-go",
	"sigs.k8s.io/controller-runtime",
	"k8s.io/api/",
	"github.com/ferryvm/ferry/api/",
}

// controlPlane is what the client binaries (ferry-controller, ferry-agent) must not link:
// the apiserver, etcd, kubectl and the parts of ferry that embed them.
var controlPlane = []string{
	"k8s.io/apiserver",
	"k8s.io/kubernetes",
	"go.etcd.io/",
	"k8s.io/kubectl",
	"github.com/ferryvm/ferry/internal/controlplane",
	"github.com/ferryvm/ferry/internal/kubectl",
	"github.com/ferryvm/ferry/internal/up",
}

func isForbidden(pkg string) bool {
	if strings.HasPrefix(pkg, "sigs.k8s.io/controller-runtime/pkg/log") {
		return false
	}
	return hasPrefix(pkg, forbidden)
}

// hasPrefix tells whether pkg is one of the packages or under one of them.
func hasPrefix(pkg string, packages []string) bool {
	for _, f := range packages {
		if pkg == strings.TrimSuffix(f, "/") || strings.HasPrefix(pkg, strings.TrimSuffix(f, "/")+"/") {
			return true
		}
	}
	return false
}

// TestLightDeps: ferry-launcher and ferry-watchdog link none of the forbidden packages;
// ferry-controller and ferry-agent none of the control plane's.
func TestLightDeps(t *testing.T) {
	for cmd, forbidden := range map[string]func(string) bool{
		"../ferry-launcher":   isForbidden,
		"../ferry-watchdog":   isForbidden,
		"../ferry-controller": func(pkg string) bool { return hasPrefix(pkg, controlPlane) },
		"../ferry-agent":      func(pkg string) bool { return hasPrefix(pkg, controlPlane) },
	} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", cmd).Output()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				t.Fatalf("go list -deps %s: %v\n%s", cmd, err, ee.Stderr)
			}
			t.Fatalf("go list -deps %s: %v", cmd, err)
		}
		importers := map[string][]string{}
		var deps []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			deps = append(deps, f[0])
			for _, imp := range f[1:] {
				importers[imp] = append(importers[imp], f[0])
			}
		}
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s: only %q", cmd, deps)
		}
		for _, d := range deps {
			if forbidden(d) {
				t.Errorf("%s links %s (imported by %s)", cmd, d, strings.Join(importers[d], ", "))
			}
		}
	}
}

func TestIsForbidden(t *testing.T) {
	for pkg, want := range map[string]bool{
		"k8s.io/client-go/rest":                      true,
		"sigs.k8s.io/controller-runtime/pkg/client":  true,
		"sigs.k8s.io/controller-runtime":             true,
		"sigs.k8s.io/controller-runtime/pkg/log/zap": false,
		"go.etcd.io/etcd/client/v3":                  true,
		"k8s.io/api/core/v1":                         true,
		"k8s.io/apimachinery/pkg/util/validation":    false,
		"k8s.io/apiserverx":                          false,
		"github.com/ferryvm/ferry/api/v1alpha2":      true,
		"github.com/ferryvm/ferry/internal/launcher": false,
	} {
		if got := isForbidden(pkg); got != want {
			t.Errorf("isForbidden(%q) = %v, want %v", pkg, got, want)
		}
	}
}
