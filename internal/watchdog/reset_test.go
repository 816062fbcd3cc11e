package watchdog

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestNamesDir(t *testing.T) {
	const dir = "/var/lib/ferry/nodes/node-1"
	for _, c := range []struct {
		cmdline string
		want    bool
	}{
		{"ferry agent --state-dir /var/lib/ferry/nodes/node-1", true},
		{"ferry agent --state-dir /var/lib/ferry/nodes/node-1 --cpu 4", true},
		{"ferry agent --state-dir=/var/lib/ferry/nodes/node-1", true},
		{"ferry launcher --run-dir /var/lib/ferry/nodes/node-1/pods/default_vm", true},
		{"qemu -drive file=/var/lib/ferry/nodes/node-1/pods/vm/disk.qcow2,if=virtio", true},
		{"qemu -chardev socket,id=m,path=/var/lib/ferry/nodes/node-1/pods/vm/qmp.sock", true},
		{"ferry agent --state-dir /var/lib/ferry/nodes/node-10", false},
		{"ferry agent --state-dir /var/lib/ferry/nodes/node-1.old", false},
		{"ferry agent --state-dir /var/lib/ferry/nodes/node-1-b/pods/x", false},
		{"ferry agent --state-dir /srv/var/lib/ferry/nodes/node-1", false},
		{"ferry agent --state-dir x/var/lib/ferry/nodes/node-1", false},
		// The second mention is exact even though the first is not.
		{"cp /var/lib/ferry/nodes/node-10/a /var/lib/ferry/nodes/node-1/a", true},
		{"ferry up --state-dir /var/lib/ferry", false},
	} {
		if got := namesDir(c.cmdline, dir); got != c.want {
			t.Errorf("namesDir(%q) = %v, want %v", c.cmdline, got, c.want)
		}
	}
}

func TestKillNodeRefusesTooBroadADirectory(t *testing.T) {
	for _, dir := range []string{"", ".", "/", "//", ".."} {
		if killed, err := KillNode(dir, os.Getpid()); err == nil {
			t.Errorf("KillNode(%q) accepted, killed %v", dir, killed)
		}
	}
}

func TestAncestors(t *testing.T) {
	up, err := ancestors(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !up[os.Getppid()] {
		t.Errorf("ancestors %v lack the parent %d", up, os.Getppid())
	}
	if up[os.Getpid()] {
		t.Errorf("ancestors %v hold the process itself", up)
	}
}

// sleeper is a `sleep 60` whose argv[0] is name, so that name is in its command line.
type sleeper struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func startSleeper(t *testing.T, name string) *sleeper {
	t.Helper()
	path, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatalf("KillNode needs processes to kill: %v", err)
	}
	cmd := exec.Command(path, "60")
	cmd.Args[0] = name
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sleeper{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.done
	})
	// KillNode reads command lines: make sure this one shows the name already.
	cmdline := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "cmdline")
	waitFor(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(cmdline)
		return strings.HasPrefix(string(b), name+"\x00")
	})
	return s
}

func (s *sleeper) running() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func TestKillNode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nodes", "node-1")
	doomed := []*sleeper{
		startSleeper(t, dir),
		startSleeper(t, dir+"/pods/default_vm/qemu"),
		startSleeper(t, "--state-dir="+dir),
	}
	spared := []*sleeper{
		startSleeper(t, dir+"0"),
		startSleeper(t, dir+"-old/pods/x"),
		startSleeper(t, "/elsewhere"+dir),
	}
	self := startSleeper(t, dir+"/pods/watchdog")

	killed, err := KillNode(dir+"/", self.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}

	var want []int
	for _, s := range doomed {
		want = append(want, s.cmd.Process.Pid)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s survived KillNode", s.name)
		}
		if ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Errorf("%s ended with %v, not SIGKILL", s.name, s.cmd.ProcessState)
		}
	}
	// KillNode signals synchronously: what it did not kill is still running.
	for _, s := range append(spared, self) {
		if !s.running() {
			t.Errorf("%s was killed: %v", s.name, s.cmd.ProcessState)
		}
	}
	slices.Sort(killed)
	slices.Sort(want)
	if !slices.Equal(killed, want) {
		t.Errorf("KillNode returned %v, want %v", killed, want)
	}
}
