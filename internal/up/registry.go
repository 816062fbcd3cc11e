package up

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ferryvm/ferry/internal/registry"
)

// RegistryDir is where the registry of `ferry up` keeps its images: an OCI image layout
// that `ferry registry push` writes to.
func RegistryDir(stateDir string) string { return filepath.Join(stateDir, "registry") }

// RegistryAddressFile holds host:port of the registry while `ferry up` runs.
func RegistryAddressFile(stateDir string) string {
	return filepath.Join(RegistryDir(stateDir), "address")
}

// RegistryAddress is the address of the running registry of a state directory.
func RegistryAddress(stateDir string) (string, error) {
	b, err := os.ReadFile(RegistryAddressFile(stateDir))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no registry is running for %s (ferry up writes its address to %s)", stateDir, RegistryAddressFile(stateDir))
	}
	return strings.TrimSpace(string(b)), err
}

// registryPort is where the registry listens on loopback: derived from the apiserver's
// port, as the other ports of `ferry up` are.
func registryPort(apiPort int) int { return apiPort + 2009 }

// startRegistry serves the state directory's registry on loopback until ctx ends, for
// dataSource.type ContainerImage (containerImage.image: <address>/<repository>:<tag>), and
// writes its address to RegistryAddressFile. A registry that cannot start is reported and
// the cluster runs without it. With real kubelets the controller runs in a pod, which
// does not reach the machine's loopback: no registry then.
func startRegistry(ctx context.Context, o Options, say func(string, ...any)) {
	if o.Kubelet == KubeletReal {
		return
	}
	dir := RegistryDir(o.StateDir)
	addr, done, err := registry.Serve(ctx, dir, net.JoinHostPort("127.0.0.1", strconv.Itoa(registryPort(o.Port))))
	if err == nil {
		err = os.WriteFile(RegistryAddressFile(o.StateDir), []byte(addr+"\n"), 0o644)
	}
	if err != nil {
		say("The registry for ContainerImage disks did not start: %v", err)
		return
	}
	go func() {
		if err := <-done; err != nil {
			say("The registry stopped: %v", err)
		}
		_ = os.Remove(RegistryAddressFile(o.StateDir))
	}()
	say("Registry for ContainerImage disks at %s (images in %s): ferry registry push DISK-FILE NAME:TAG, then containerImage.image: %s/NAME:TAG", addr, dir, addr)
}
