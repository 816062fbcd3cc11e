package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Options configure the node's device plugins.
type Options struct {
	// Dir is the kubelet's device-plugins directory (<kubelet root>/device-plugins), where
	// its kubelet.sock is and the plugins' sockets go.
	Dir string
	// Devices are what the node offers (NodeDevices).
	Devices []Device
	// Interval is how often the plugins check the kubelet's socket, their own and the
	// devices (0: every second).
	Interval time.Duration
	Log      logr.Logger
}

// registerTimeout bounds one registration: the kubelet answers at once or not at all.
const registerTimeout = 10 * time.Second

// Run serves and registers a plugin for each device until ctx ends, then removes their
// sockets. A kubelet that is not there yet, or restarts, is waited for.
func Run(ctx context.Context, o Options) error {
	if o.Dir == "" {
		return errors.New("device plugins: no kubelet device-plugins directory")
	}
	interval := o.Interval
	if interval <= 0 {
		interval = time.Second
	}
	var plugins []*plugin
	for _, d := range o.Devices {
		if d.Resource == "" || d.Path == "" || d.Units <= 0 {
			return fmt.Errorf("device plugins: incomplete device %+v", d)
		}
		plugins = append(plugins, newPlugin(d, o.Dir))
	}
	defer func() {
		for _, p := range plugins {
			p.stop()
		}
	}()
	kubelet := filepath.Join(o.Dir, filepath.Base(pluginapi.KubeletSocket))
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, p := range plugins {
			p.check(ctx, kubelet, o.Log.WithValues("resource", p.dev.Resource))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// check brings the plugin up to date: the device's health, a server on its socket (the
// kubelet removes the plugins' sockets when it starts), and its registration with the
// kubelet whose socket is there now.
func (p *plugin) check(ctx context.Context, kubelet string, log logr.Logger) {
	p.setHealthy(exists(p.dev.Path))
	if id, err := statID(p.socket); err != nil || id != p.served {
		p.stop()
		if err := p.serve(); err != nil {
			p.failed(log, fmt.Errorf("serving on %s: %w", p.socket, err))
			return
		}
		p.registered = fileID{}
	}
	kid, err := statID(kubelet)
	if err != nil {
		p.failed(log, fmt.Errorf("no kubelet to register with (is the kubelet's root directory's device-plugins directory mounted?): %w", err))
		return
	}
	if kid == p.registered {
		return
	}
	if err := p.register(ctx, kubelet); err != nil {
		p.failed(log, fmt.Errorf("registering with the kubelet at %s: %w", kubelet, err))
		return
	}
	p.registered, p.lastErr = kid, ""
	log.Info("Registered with the kubelet", "socket", p.socket, "device", p.dev.Path, "units", p.dev.Units)
}

// failed logs err unless it is the one logged last (the check repeats every second).
func (p *plugin) failed(log logr.Logger, err error) {
	if err.Error() != p.lastErr {
		p.lastErr = err.Error()
		log.Error(err, "Device plugin not registered; retrying")
	}
}

func (p *plugin) register(ctx context.Context, kubelet string) error {
	conn, err := grpc.NewClient("unix://"+kubelet, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     filepath.Base(p.socket),
		ResourceName: p.dev.Resource,
		Options:      &pluginapi.DevicePluginOptions{},
	})
	return err
}

func exists(path string) bool {
	_, err := statID(path)
	return err == nil
}
