package deviceplugin

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// FuzzAllocate decodes arbitrary bytes as the kubelet's AllocateRequest (protobuf, as gRPC
// would) and checks the answer: an error for any unit the plugin does not offer, otherwise
// the device, and only it, once for each container.
func FuzzAllocate(f *testing.F) {
	p := newPlugin(Device{Resource: "devices.ferryvm.io/tun", Path: "/dev/net/tun", Permissions: "rwm", Units: 3}, f.TempDir())
	for _, ids := range [][][]string{{{"tun-0"}}, {{"tun-0", "tun-2"}, {"tun-1"}}, {{"tun-3"}}, {{"tun-0"}, {""}}, {}, {{}}} {
		req := &pluginapi.AllocateRequest{}
		for _, c := range ids {
			req.ContainerRequests = append(req.ContainerRequests, &pluginapi.ContainerAllocateRequest{DevicesIds: c})
		}
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		req := &pluginapi.AllocateRequest{}
		if proto.Unmarshal(b, req) != nil {
			return // gRPC refuses it before the plugin sees it
		}
		resp, err := p.Allocate(context.Background(), req)
		known := true
		for _, c := range req.ContainerRequests {
			for _, id := range c.DevicesIds {
				known = known && slices.Contains(p.ids, id)
			}
		}
		if known != (err == nil) {
			t.Fatalf("Allocate(%v) = %v, want an error only for unknown units", req, err)
		}
		if err != nil {
			return
		}
		if len(resp.ContainerResponses) != len(req.ContainerRequests) {
			t.Fatalf("%d answers to %d containers", len(resp.ContainerResponses), len(req.ContainerRequests))
		}
		for _, c := range resp.ContainerResponses {
			if len(c.Devices) != 1 || c.Devices[0].HostPath != "/dev/net/tun" || c.Devices[0].ContainerPath != "/dev/net/tun" || c.Devices[0].Permissions != "rwm" || len(c.Mounts) != 0 || len(c.Envs) != 0 {
				t.Fatalf("container answer %v gives more or other than the device", c)
			}
		}
	})
}
