package up

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/ferryvm/ferry/internal/registry"
)

// TestStartRegistry: ferry up's registry listens on loopback at the apiserver's port +
// 2009, writes its address where `ferry registry push` reads it, serves what is pushed
// into the state directory's registry, and removes the address when it stops.
func TestStartRegistry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	state := t.TempDir()
	var said []string
	ctx, stop := context.WithCancel(context.Background())
	startRegistry(ctx, Options{StateDir: state, Port: port - 2009}, func(f string, a ...any) { said = append(said, fmt.Sprintf(f, a...)) })
	addr, err := RegistryAddress(state)
	if err != nil || addr != fmt.Sprintf("127.0.0.1:%d", port) {
		t.Fatalf("address %q, %v; said %q", addr, err, said)
	}
	if len(said) != 1 || !strings.Contains(said[0], addr+"/NAME:TAG") {
		t.Errorf("said %q", said)
	}
	disk := filepath.Join(t.TempDir(), "d.img")
	if err := os.WriteFile(disk, []byte("disk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Push(RegistryDir(state), disk, "disks/d", "v1"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/v2/disks/d/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the pushed image: %s", resp.Status)
	}
	stop()
	err = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		_, err := os.Stat(RegistryAddressFile(state))
		return os.IsNotExist(err), nil
	})
	if err != nil {
		t.Errorf("the address file is still there after the registry stopped: %v", err)
	}
}

func TestStartRegistryNotOnRealKubelets(t *testing.T) {
	state := t.TempDir()
	startRegistry(context.Background(), Options{StateDir: state, Kubelet: KubeletReal}, func(string, ...any) {})
	if _, err := RegistryAddress(state); err == nil {
		t.Error("a registry address is written for real kubelets, whose controller pod cannot reach loopback")
	}
}
