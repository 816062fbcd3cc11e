package deviceplugin

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

// Device is a device node offered as an extended resource.
type Device struct {
	// Resource is the extended resource's name (v1alpha2.ResourceTun, ...).
	Resource string
	// Path is the device node, at the same path on the node and in the container.
	Path string
	// Permissions are the container's device cgroup access: r, w, m (mknod).
	Permissions string
	// Units is how many containers may hold the device at once.
	Units int
}

// DefaultUnits is how many launcher pods a node may run with a device: the kubelet's
// default pod limit (maxPods), which no node running VMs comes near.
const DefaultUnits = 110

// NodeDevices is what this node can offer: the tun device when the node has
// /dev/net/tun, KVM when it can run guests (hypervisor.KVMUsable: the CPU has vmx or svm
// and /dev/kvm answers; a /dev/kvm without them would draw the VMs that ask for KVM to a
// node that runs them under TCG). Left out says what is not offered, and why.
func NodeDevices() (devs []Device, leftOut []string) {
	if isCharDevice("/dev/net/tun") {
		devs = append(devs, Device{Resource: v1alpha2.ResourceTun, Path: "/dev/net/tun", Permissions: "rw", Units: DefaultUnits})
	} else {
		leftOut = append(leftOut, v1alpha2.ResourceTun+": the node has no /dev/net/tun (load the tun module): its launchers cannot give VMs a NIC")
	}
	switch {
	case hypervisor.KVMUsable():
		devs = append(devs, Device{Resource: v1alpha2.ResourceKVM, Path: "/dev/kvm", Permissions: "rw", Units: DefaultUnits})
	case isCharDevice("/dev/kvm"):
		leftOut = append(leftOut, v1alpha2.ResourceKVM+": /dev/kvm is there but the CPU advertises no vmx or svm (or the device does not answer): guests run under TCG")
	default:
		leftOut = append(leftOut, v1alpha2.ResourceKVM+": the node has no /dev/kvm: guests run under TCG")
	}
	return devs, leftOut
}

func isCharDevice(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// plugin serves one Device to the kubelet.
type plugin struct {
	pluginapi.UnimplementedDevicePluginServer

	dev    Device
	socket string // its socket, in the kubelet's device-plugins directory
	ids    []string

	mu      sync.Mutex
	healthy bool
	changed chan struct{} // closed (and replaced) when healthy changes

	// What Run's loop alone reads and writes: the server, the socket it listens on, and
	// the kubelet socket the plugin last registered with (zero: none).
	srv        *grpc.Server
	served     fileID
	registered fileID
	lastErr    string
}

func newPlugin(dev Device, dir string) *plugin {
	short := dev.Resource[strings.LastIndex(dev.Resource, "/")+1:]
	p := &plugin{dev: dev, socket: filepath.Join(dir, "ferry-"+short+".sock"), changed: make(chan struct{})}
	for i := range dev.Units {
		p.ids = append(p.ids, fmt.Sprintf("%s-%d", short, i))
	}
	return p
}

// fileID tells one file from another at the same path: a kubelet that restarts makes a
// new socket, which may get the old one's inode number back but not its time.
type fileID struct {
	dev, ino uint64
	mtime    int64
}

func statID(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, fmt.Errorf("%s: no inode", path)
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino, mtime: fi.ModTime().UnixNano()}, nil
}

// setHealthy records whether the device node is there, waking ListAndWatch on a change.
func (p *plugin) setHealthy(h bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h != p.healthy {
		p.healthy = h
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

func (p *plugin) health() (bool, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.healthy, p.changed
}

// serve listens on the plugin's socket anew (replacing whatever is at its path).
func (p *plugin) serve() error {
	if err := os.Remove(p.socket); err != nil && !os.IsNotExist(err) {
		return err
	}
	ln, err := net.Listen("unix", p.socket)
	if err != nil {
		return err
	}
	id, err := statID(p.socket)
	if err != nil {
		ln.Close()
		return err
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() { _ = srv.Serve(ln) }()
	p.srv, p.served = srv, id
	return nil
}

// stop ends the server, its streams and its socket.
func (p *plugin) stop() {
	if p.srv != nil {
		p.srv.Stop() // closes the listener, which removes the socket
		p.srv, p.served = nil, fileID{}
	}
}

// GetDevicePluginOptions: no PreStartContainer, no preferred allocation (every unit is the
// same device).
func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch sends the units, then again whenever the device node comes or goes.
func (p *plugin) ListAndWatch(_ *pluginapi.Empty, s grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	for {
		healthy, changed := p.health()
		h := pluginapi.Unhealthy
		if healthy {
			h = pluginapi.Healthy
		}
		resp := &pluginapi.ListAndWatchResponse{Devices: make([]*pluginapi.Device, 0, len(p.ids))}
		for _, id := range p.ids {
			resp.Devices = append(resp.Devices, &pluginapi.Device{ID: id, Health: h})
		}
		if err := s.Send(resp); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-s.Context().Done():
			return nil
		}
	}
}

// Allocate gives each container the device node, whatever units it was given.
func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		for _, id := range c.DevicesIds {
			if !slices.Contains(p.ids, id) {
				return nil, status.Errorf(codes.InvalidArgument, "%s: no unit %q", p.dev.Resource, id)
			}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Devices: []*pluginapi.DeviceSpec{{ContainerPath: p.dev.Path, HostPath: p.dev.Path, Permissions: p.dev.Permissions}},
		})
	}
	return resp, nil
}

// GetPreferredAllocation is not offered (GetDevicePluginOptions); it prefers nothing.
func (p *plugin) GetPreferredAllocation(context.Context, *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	return &pluginapi.PreferredAllocationResponse{}, nil
}

// PreStartContainer is not asked for (GetDevicePluginOptions); it does nothing.
func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
