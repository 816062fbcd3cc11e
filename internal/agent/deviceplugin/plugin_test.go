package deviceplugin

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// fakeKubelet is the kubelet's registration service on <dir>/kubelet.sock.
type fakeKubelet struct {
	pluginapi.UnimplementedRegistrationServer
	srv  *grpc.Server
	reqs chan *pluginapi.RegisterRequest
}

func (k *fakeKubelet) Register(_ context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.reqs <- r
	return &pluginapi.Empty{}, nil
}

// startKubelet starts a fake kubelet as a real one starts: it removes every socket in dir
// (the plugins' too), then serves kubelet.sock.
func startKubelet(t *testing.T, dir string) *fakeKubelet {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.Remove(filepath.Join(dir, e.Name()))
	}
	ln, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKubelet{srv: grpc.NewServer(), reqs: make(chan *pluginapi.RegisterRequest, 16)}
	pluginapi.RegisterRegistrationServer(k.srv, k)
	go func() { _ = k.srv.Serve(ln) }()
	t.Cleanup(k.srv.Stop)
	return k
}

// registrations waits for n registrations and returns them by resource.
func (k *fakeKubelet) registrations(t *testing.T, n int) map[string]*pluginapi.RegisterRequest {
	t.Helper()
	got := map[string]*pluginapi.RegisterRequest{}
	for len(got) < n {
		select {
		case r := <-k.reqs:
			got[r.ResourceName] = r
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d plugins registered: %v", len(got), n, got)
		}
	}
	return got
}

func dialPlugin(t *testing.T, dir string, r *pluginapi.RegisterRequest) pluginapi.DevicePluginClient {
	t.Helper()
	if r.Version != pluginapi.Version || r.Endpoint != filepath.Base(r.Endpoint) {
		t.Fatalf("registration %+v: want version %s and an endpoint in the kubelet's directory", r, pluginapi.Version)
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, r.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pluginapi.NewDevicePluginClient(conn)
}

// watch opens ListAndWatch and returns a function that waits for the next list whose
// devices all have health h, and returns their IDs.
func watch(ctx context.Context, t *testing.T, c pluginapi.DevicePluginClient) func(h string) []string {
	t.Helper()
	// WaitForReady: a plugin may register with a restarted kubelet a moment before its own
	// socket, which the kubelet's start removed, is served again (the plugin's next check
	// serves it and registers again); wait for it rather than fail on the first dial.
	s, err := c.ListAndWatch(ctx, &pluginapi.Empty{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	return func(h string) []string {
		t.Helper()
		for {
			resp, err := s.Recv()
			if err != nil {
				t.Fatalf("ListAndWatch: %v (waiting for %s devices)", err, h)
			}
			var ids []string
			all := true
			for _, d := range resp.Devices {
				ids = append(ids, d.ID)
				all = all && d.Health == h
			}
			if all {
				return ids
			}
		}
	}
}

func TestPluginsServeRegisterAndFollowTheKubelet(t *testing.T) {
	dir := t.TempDir()
	devDir := t.TempDir()
	tun, kvm := filepath.Join(devDir, "tun"), filepath.Join(devDir, "kvm")
	for _, f := range []string{tun, kvm} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // bounds every wait below
	defer cancel()

	// The plugins start before the kubelet: they wait for it.
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Dir: dir, Interval: 20 * time.Millisecond, Log: testr.New(t), Devices: []Device{
			{Resource: v1alpha2.ResourceTun, Path: tun, Permissions: "rw", Units: 3},
			{Resource: v1alpha2.ResourceKVM, Path: kvm, Permissions: "rw", Units: 2},
		}})
	}()
	time.Sleep(100 * time.Millisecond)
	k := startKubelet(t, dir)
	regs := k.registrations(t, 2)

	c := dialPlugin(t, dir, regs[v1alpha2.ResourceTun])
	if opts, err := c.GetDevicePluginOptions(ctx, &pluginapi.Empty{}); err != nil || opts.PreStartRequired || opts.GetPreferredAllocationAvailable {
		t.Errorf("GetDevicePluginOptions: %+v, %v; want neither PreStartContainer nor preferred allocations", opts, err)
	}
	next := watch(ctx, t, c)
	ids := next(pluginapi.Healthy)
	if len(ids) != 3 {
		t.Fatalf("tun units %v, want 3", ids)
	}
	resp, err := c.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: ids[:1]}, {DevicesIds: ids[1:]},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.ContainerResponses) != 2 {
		t.Fatalf("Allocate answered %d containers, want 2", len(resp.ContainerResponses))
	}
	for _, cr := range resp.ContainerResponses {
		if len(cr.Devices) != 1 || cr.Devices[0].HostPath != tun || cr.Devices[0].ContainerPath != tun || cr.Devices[0].Permissions != "rw" {
			t.Errorf("Allocate: devices %v, want %s at the same path, rw", cr.Devices, tun)
		}
		if len(cr.Mounts) != 0 || len(cr.Envs) != 0 {
			t.Errorf("Allocate: mounts %v, env %v, want none", cr.Mounts, cr.Envs)
		}
	}
	if _, err := c.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"kvm-0"}}}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Allocate of another resource's unit: %v, want InvalidArgument", err)
	}
	kc := dialPlugin(t, dir, regs[v1alpha2.ResourceKVM])
	if ids := watch(ctx, t, kc)(pluginapi.Healthy); len(ids) != 2 {
		t.Errorf("kvm units %v, want 2", ids)
	}
	resp, err = kc.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"kvm-1"}}}})
	if err != nil || resp.ContainerResponses[0].Devices[0].HostPath != kvm {
		t.Errorf("kvm Allocate: %v, %v", resp, err)
	}

	// The device node goes and comes back: the kubelet is told each time.
	os.Remove(tun)
	next(pluginapi.Unhealthy)
	os.WriteFile(tun, nil, 0o600)
	next(pluginapi.Healthy)

	// The kubelet restarts: it removes the plugins' sockets and makes a new kubelet.sock.
	k.srv.Stop()
	k = startKubelet(t, dir)
	regs = k.registrations(t, 2)
	c = dialPlugin(t, dir, regs[v1alpha2.ResourceTun])
	if ids := watch(ctx, t, c)(pluginapi.Healthy); len(ids) != 3 {
		t.Errorf("after the kubelet's restart: tun units %v, want 3", ids)
	}

	// A new kubelet.sock alone (the plugins' sockets left in place) is registered with too.
	k.srv.Stop()
	os.Remove(filepath.Join(dir, "kubelet.sock"))
	ln, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	k2 := &fakeKubelet{srv: grpc.NewServer(), reqs: make(chan *pluginapi.RegisterRequest, 16)}
	pluginapi.RegisterRegistrationServer(k2.srv, k2)
	go func() { _ = k2.srv.Serve(ln) }()
	defer k2.srv.Stop()
	k2.registrations(t, 2)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	for _, r := range regs {
		if _, err := os.Stat(filepath.Join(dir, r.Endpoint)); !os.IsNotExist(err) {
			t.Errorf("socket %s left behind: %v", r.Endpoint, err)
		}
	}
}

func TestRunRefusesIncompleteDevices(t *testing.T) {
	for _, o := range []Options{
		{Devices: []Device{{Resource: v1alpha2.ResourceTun, Path: "/dev/net/tun", Units: 1}}},
		{Dir: t.TempDir(), Devices: []Device{{Resource: v1alpha2.ResourceTun, Path: "/dev/net/tun"}}},
	} {
		if err := Run(context.Background(), o); err == nil {
			t.Errorf("Run(%+v) accepted it", o)
		}
	}
}
