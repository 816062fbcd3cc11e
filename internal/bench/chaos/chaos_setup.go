package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/bench"
)

// openChaos starts the cluster of a chaos run and its VMs; close stops it (keeping its
// state when keep).
func openChaos(ctx context.Context, o ChaosOptions, say func(string, ...any)) (*chaosRun, func(keep bool), error) {
	bin, err := filepath.Abs(o.Ferry)
	if err != nil {
		return nil, nil, err
	}
	nodes := o.Nodes
	upArgs := []string{"--fencing-profile", "Fast"}
	if !o.Real {
		nodes = 0
		upArgs = append(upArgs, "--netns=false")
	}
	cl, err := bench.OpenCluster(ctx, bin, "", o.StateDir, "fc-", o.Port, nodes, o.WaitOther, say, upArgs...)
	if err != nil {
		return nil, nil, err
	}
	var stopSim func()
	closeRun := func(keep bool) {
		if stopSim != nil {
			stopSim()
		}
		cl.Close(keep, say)
	}
	r := &chaosRun{o: o, bin: bin, kube: cl.Kubeconfig, say: say, ns: "default", vms: map[string]vmIdentity{}}
	if o.Real {
		rd := &realDriver{bin: bin, stateDir: cl.StateDir, up: cl.Up, ns: r.ns, watches: map[string]*bench.InstanceWatch{}}
		r.drv = rd
		for i := 1; i <= o.VMs; i++ {
			rd.watches[fmt.Sprintf("c%02d", i)] = nil
		}
		rd.startWatching(ctx)
		prev := stopSim
		stopSim = func() {
			rd.stop()
			if prev != nil {
				prev()
			}
		}
	} else {
		args := []string{"--control", "127.0.0.1:0", "--peer-port", strconv.Itoa(o.Port + 2003), "--migration-time", "2s"}
		if o.BrokenWatchdog {
			args = append(args, "--watchdog-resets=false")
		}
		sim, err := bench.StartSimNodes(ctx, bin, cl, o.Nodes, say, args...)
		if err != nil {
			closeRun(true)
			return nil, nil, err
		}
		stopSim = sim.Stop
		addr, err := waitFile(ctx, filepath.Join(sim.Dir, "control-addr"), time.Minute)
		if err != nil {
			closeRun(true)
			return nil, nil, err
		}
		r.drv = &simDriver{base: "http://" + addr, stateDir: cl.StateDir, up: cl.Up}
	}
	fail := func(err error) (*chaosRun, func(bool), error) {
		closeRun(true)
		return nil, nil, err
	}
	image, c, err := bench.GuestAndClient(ctx, cl.Kubeconfig)
	if err != nil {
		return fail(err)
	}
	r.c = c
	if err := bench.WaitNodesReady(ctx, c, say, o.Nodes, 5*time.Minute); err != nil {
		return fail(err)
	}
	var nl corev1.NodeList
	if err := c.List(ctx, &nl); err != nil {
		return fail(err)
	}
	for _, n := range nl.Items {
		r.nodes = append(r.nodes, n.Name)
	}
	fb := &bench.FerryVM{C: c, NS: r.ns, Say: say, ImageURL: "file://" + image}
	if err := fb.EnsureImage(ctx); err != nil {
		return fail(err)
	}
	if err := r.createVMs(ctx); err != nil {
		return fail(err)
	}
	say("%d VMs Running on %d nodes; starting %d trials (seed %d)", o.VMs, o.Nodes, o.Trials, o.Seed)
	return r, closeRun, nil
}

// createVMs creates the run's VMs, each with a disk of its own (half AlwaysOn, half
// AlwaysOnUnlessStoppedManually), waits until they run and records their addresses and
// disks.
func (r *chaosRun) createVMs(ctx context.Context) error {
	mem := resource.MustParse("128Mi")
	for i := 1; i <= r.o.VMs; i++ {
		name := fmt.Sprintf("c%02d", i)
		policy := v1alpha2.AlwaysOn
		if i%2 == 0 {
			policy = v1alpha2.AlwaysOnUnlessStoppedManually
		}
		labels := map[string]string{bench.LabelBench: bench.BenchMarker}
		disk := &v1alpha2.VirtualDisk{
			ObjectMeta: metav1.ObjectMeta{Name: diskOf(name), Namespace: r.ns, Labels: labels},
			Spec: v1alpha2.VirtualDiskSpec{DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceObjectRef,
				ObjectRef: &v1alpha2.ObjectRefSource{Kind: "ClusterVirtualImage", Name: bench.ImageName}}},
		}
		vm := &v1alpha2.VirtualMachine{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.ns, Labels: labels},
			Spec: v1alpha2.VirtualMachineSpec{
				RunPolicy:           policy,
				LiveMigrationPolicy: v1alpha2.PreferSafe,
				CPU:                 v1alpha2.CPUSpec{Cores: 1, CoreFraction: "10%"},
				Memory:              v1alpha2.MemorySpec{Size: mem},
				BlockDeviceRefs:     []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.DiskDevice, Name: diskOf(name)}},
			},
		}
		if err := r.c.Create(ctx, disk); err != nil {
			return fmt.Errorf("creating VirtualDisk %s: %w", disk.Name, err)
		}
		if err := r.c.Create(ctx, vm); err != nil {
			return fmt.Errorf("creating VirtualMachine %s: %w", name, err)
		}
		r.vms[name] = vmIdentity{}
	}
	var why string
	ok := r.waitFor(ctx, time.Now().Add(10*time.Minute), func() (bool, string) {
		vms, err := r.listVMs(ctx)
		if err != nil {
			why = err.Error()
			return false, why
		}
		for name := range r.vms {
			v := vms[name]
			if v == nil || v.Status.Phase != v1alpha2.MachineRunning || v.Status.IPAddress == "" {
				why = name + " not yet Running with an address"
				return false, why
			}
		}
		for name := range r.vms {
			var d v1alpha2.VirtualDisk
			if err := r.c.Get(ctx, clientKey(r.ns, diskOf(name)), &d); err != nil {
				why = err.Error()
				return false, why
			}
			r.vms[name] = vmIdentity{ip: vms[name].Status.IPAddress, disk: d.UID}
		}
		return true, ""
	})
	if !ok {
		return fmt.Errorf("the VMs did not all run within 10 minutes: %s", why)
	}
	return nil
}

// waitFile waits for a file to hold something and returns it.
func waitFile(ctx context.Context, path string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return string(bytes.TrimSpace(b)), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s not written within %s", path, timeout)
		}
		if err := bench.Sleep(ctx, 200*time.Millisecond); err != nil {
			return "", err
		}
	}
}

// killController kills `ferry up`'s controller (it restarts it).
func killController(stateDir string) error {
	marker := "controller --kubeconfig " + filepath.Join(stateDir, "control-plane")
	if out, err := exec.Command("pkill", "-KILL", "-f", marker).CombinedOutput(); err != nil {
		return fmt.Errorf("pkill %q: %v %s", marker, err, out)
	}
	return nil
}

// restartUpAPIServer asks `ferry up` to restart its apiserver and etcd (SIGUSR1).
func restartUpAPIServer(up *bench.UpProcess) error {
	if up == nil || up.Cmd.Process == nil {
		return fmt.Errorf("the run did not start ferry up: cannot restart its apiserver")
	}
	return up.Cmd.Process.Signal(syscall.SIGUSR1)
}

// simDriver injects faults into `ferry sim-nodes` through its control endpoint.
type simDriver struct {
	base     string
	stateDir string
	up       *bench.UpProcess
	mu       sync.Mutex
	seen     int // overlaps already reported
}

func (d *simDriver) post(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, strings.TrimSpace(b.String()))
	}
	return nil
}

type simGuests struct {
	Running  map[string][]string `json:"running"`
	Overlaps []struct {
		VM        string    `json:"vm"`
		At        time.Time `json:"at"`
		Instances []string  `json:"instances"`
	} `json:"overlaps"`
}

func (d *simDriver) guests(ctx context.Context) (*simGuests, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/guests", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var g simGuests
	return &g, json.NewDecoder(resp.Body).Decode(&g)
}

func (d *simDriver) powerOff(ctx context.Context, n string) error {
	return d.post(ctx, "/nodes/"+n+"/poweroff")
}
func (d *simDriver) powerOn(ctx context.Context, n string) error {
	return d.post(ctx, "/nodes/"+n+"/poweron")
}
func (d *simDriver) killAgent(ctx context.Context, n string) error {
	return d.post(ctx, "/nodes/"+n+"/kill-agent")
}
func (d *simDriver) freeze(ctx context.Context, n string, t time.Duration) error {
	return d.post(ctx, "/nodes/"+n+"/freeze?for="+t.String())
}
func (d *simDriver) cut(ctx context.Context, n string, t time.Duration) error {
	return d.post(ctx, "/nodes/"+n+"/cut?for="+t.String())
}
func (d *simDriver) killLauncher(ctx context.Context, p *corev1.Pod) error {
	return d.post(ctx, "/launchers/"+string(p.UID)+"/kill")
}
func (d *simDriver) restartController(context.Context) error { return killController(d.stateDir) }
func (d *simDriver) restartAPIServer(context.Context) error  { return restartUpAPIServer(d.up) }

func (d *simDriver) running(ctx context.Context) (map[string]int, error) {
	g, err := d.guests(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for vm, in := range g.Running {
		out[vm] = len(in)
	}
	return out, nil
}

func (d *simDriver) overlaps(ctx context.Context) ([]string, error) {
	g, err := d.guests(ctx)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, o := range g.Overlaps[min(d.seen, len(g.Overlaps)):] {
		out = append(out, fmt.Sprintf("%s at %s: %s", o.VM, o.At.Format("15:04:05.000"), strings.Join(o.Instances, " and ")))
	}
	d.seen = len(g.Overlaps)
	return out, nil
}

// Simulated nodes arm a 5 s watchdog (Fast): holds up to 12 s reset some nodes.
func (d *simDriver) faultTimes() (time.Duration, time.Duration) {
	return 12 * time.Second, 4 * time.Second
}
