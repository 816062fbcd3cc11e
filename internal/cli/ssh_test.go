package cli

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func TestParsePortPair(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want PortPair
		err  string
	}{
		{"8080:80", PortPair{8080, 80}, ""},
		{"22", PortPair{22, 22}, ""},
		{":5432", PortPair{0, 5432}, ""},
		{"65535:1", PortPair{65535, 1}, ""},
		{"0:80", PortPair{}, "local port"},
		{"8080:", PortPair{}, "remote port"},
		{"80:70000", PortPair{}, "remote port"},
		{"http", PortPair{}, `"http" is not a port number`},
		{"1:2:3", PortPair{}, "remote port"},
		{"+80", PortPair{}, "not a port number"},
		{" 80", PortPair{}, "not a port number"},
		{"", PortPair{}, "remote port"},
	} {
		got, err := parsePortPair(tc.in)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("parsePortPair(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("parsePortPair(%q) = %v, %v; want an error saying %q", tc.in, got, err, tc.err)
		}
	}
}

func TestParseUserVM(t *testing.T) {
	for _, tc := range []struct {
		in, user, vm, err string
	}{
		{"linux-vm", "", "linux-vm", ""},
		{"cloud@linux-vm", "cloud", "linux-vm", ""},
		{"a@b@vm", "a@b", "vm", ""},
		{"@vm", "", "", "empty user name"},
		{"cloud@", "", "", "no VM name"},
		{"cloud@Linux_VM", "", "", "is not a VM name"},
		{"", "", "", "no VM name"},
	} {
		user, vm, err := parseUserVM(tc.in)
		if tc.err == "" {
			if err != nil || user != tc.user || vm != tc.vm {
				t.Errorf("parseUserVM(%q) = %q, %q, %v", tc.in, user, vm, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("parseUserVM(%q) = %v; want an error saying %q", tc.in, err, tc.err)
		}
	}
}

func TestParseSCPPath(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want scpPath
		err  string
	}{
		{"cloud@linux-vm:/tmp/x", scpPath{"cloud", "linux-vm", "/tmp/x"}, ""},
		{"linux-vm:", scpPath{"", "linux-vm", ""}, ""},
		{"linux-vm:a:b", scpPath{"", "linux-vm", "a:b"}, ""},
		{"./a:b", scpPath{Path: "./a:b"}, ""},
		{"/tmp/a:b", scpPath{Path: "/tmp/a:b"}, ""},
		{"file.txt", scpPath{Path: "file.txt"}, ""},
		{"Bad_Name:x", scpPath{}, "write ./Bad_Name:x for a local file"},
		{"", scpPath{}, "empty path"},
	} {
		got, err := parseSCPPath(tc.in)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("parseSCPPath(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("parseSCPPath(%q) = %v; want an error saying %q", tc.in, err, tc.err)
		}
	}
}

func testSSHOptions() sshOptions {
	return sshOptions{Self: "/opt/my ferry/ferry", Namespace: "prod", Transport: transportAuto, Port: 22}
}

func TestSSHArgs(t *testing.T) {
	o := testSSHOptions()
	o.Identity = "/home/u/.ssh/id_ed25519"
	o.Extra = []string{"-t"}
	got := sshArgs(o, "cloud", "linux-vm", "nproc; uname -r")
	want := []string{
		"-o", "ProxyCommand='/opt/my ferry/ferry' v port-forward --stdio -n prod linux-vm 22",
		"-o", "HostKeyAlias=vm.linux-vm.prod",
		"-i", "/home/u/.ssh/id_ed25519",
		"-t",
		"-o", "StrictHostKeyChecking=accept-new",
		"--", "cloud@vm.linux-vm.prod", "nproc; uname -r",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ssh args\n got %q\nwant %q", got, want)
	}

	// No user, no command, a transport and port of one's own, --username as the default user.
	o = testSSHOptions()
	o.Transport, o.Port, o.User = transportExec, 2222, "root"
	got = sshArgs(o, "", "db", "")
	want = []string{
		"-o", "ProxyCommand='/opt/my ferry/ferry' v port-forward --stdio -n prod --transport exec db 2222",
		"-o", "HostKeyAlias=vm.db.prod",
		"-o", "StrictHostKeyChecking=accept-new",
		"--", "root@vm.db.prod",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ssh args\n got %q\nwant %q", got, want)
	}
}

// inProd is Globals.target with -n prod.
func inProd(s string) (vmRef, error) { return (&Globals{Namespace: "prod"}).target(s) }

func TestSCPArgs(t *testing.T) {
	o := testSSHOptions()
	got, vm, err := scpArgs(o, true, "./build:1/", "cloud@linux-vm:/srv/", inProd)
	if err != nil || vm != (vmRef{"prod", "linux-vm"}) {
		t.Fatal(vm, err)
	}
	want := []string{
		"-o", "ProxyCommand='/opt/my ferry/ferry' v port-forward --stdio -n prod linux-vm 22",
		"-o", "HostKeyAlias=vm.linux-vm.prod",
		"-o", "StrictHostKeyChecking=accept-new",
		"-r", "--", "./build:1/", "cloud@vm.linux-vm.prod:/srv/",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("scp args\n got %q\nwant %q", got, want)
	}
	got, vm, err = scpArgs(o, false, "db:/var/log/syslog", "syslog", inProd)
	if err != nil || vm.Name != "db" || got[len(got)-2] != "vm.db.prod:/var/log/syslog" || got[len(got)-1] != "syslog" {
		t.Fatalf("scp args %q, %v", got, err)
	}
	// VM.NAMESPACE: the namespace goes to the proxy, the host alias and the destination.
	o.Namespace = ""
	got, vm, err = scpArgs(o, false, "syslog", "root@db.staging:/tmp/", (&Globals{}).target)
	if err != nil || vm != (vmRef{"staging", "db"}) || !slices.Contains(got, "ProxyCommand='/opt/my ferry/ferry' v port-forward --stdio -n staging db 22") ||
		got[len(got)-1] != "root@vm.db.staging:/tmp/" {
		t.Fatalf("scp args %q, %v, %v", got, vm, err)
	}
	if _, _, err := scpArgs(o, false, "syslog", "db.staging:/tmp/", inProd); err == nil || !strings.Contains(err.Error(), "-n says prod") {
		t.Fatalf("scp to db.staging with -n prod: %v; want a refusal", err)
	}
	for _, tc := range [][2]string{{"a:/x", "b:/y"}, {"x", "y"}} {
		if _, _, err := scpArgs(o, false, tc[0], tc[1], inProd); err == nil {
			t.Errorf("scpArgs(%q, %q) took it; want an error (exactly one side is a VM)", tc[0], tc[1])
		}
	}
}

// TestProxyCommandLineThroughAShell checks the quoting with a real shell: the words that
// come out are the ones that went in, after ssh's %% → % expansion.
func TestProxyCommandLineThroughAShell(t *testing.T) {
	argv := []string{"/bin/echo", "it's", "a b", "100%", "$HOME", "`id`", "plain"}
	line := proxyCommandLine(argv)
	if !strings.Contains(line, "100%%") {
		t.Fatalf("%q: a %% must be doubled for ssh", line)
	}
	// What ssh hands the shell: the line with %% undone, after "exec ".
	shLine := strings.ReplaceAll(line, "%%", "%")
	out, err := exec.Command("/bin/sh", "-c", "set -- "+shLine+`; shift; for w in "$@"; do printf '[%s]' "$w"; done`).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "[it's][a b][100%][$HOME][`id`][plain]"; string(out) != want {
		t.Fatalf("the shell read %s, want %s", out, want)
	}
}

func TestEndpointOf(t *testing.T) {
	vm := func(phase v1alpha2.MachinePhase, ip string, pods ...v1alpha2.VirtualMachinePod) *v1alpha2.VirtualMachine {
		return &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "vm"},
			Status: v1alpha2.VirtualMachineStatus{Phase: phase, IPAddress: ip, VirtualMachinePods: pods}}
	}
	ep, err := endpointOf(vm(v1alpha2.MachineMigrating, "10.66.10.5", v1alpha2.VirtualMachinePod{Name: "old"}, v1alpha2.VirtualMachinePod{Name: "new", Active: true}))
	if err != nil || ep.Address != "10.66.10.5" || ep.Pod != "new" {
		t.Fatalf("migrating VM: %+v, %v", ep, err)
	}
	for _, tc := range []struct {
		vm   *v1alpha2.VirtualMachine
		want string
	}{
		{vm(v1alpha2.MachineStopped, "10.66.10.5"), "is Stopped: only a Running VM can be reached (start it with `ferry v start -n ns vm`)"},
		{vm("", ""), "is not started yet"},
		{vm(v1alpha2.MachineRunning, ""), "has no IP address"},
	} {
		if _, err := endpointOf(tc.vm); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("endpointOf(%s): %v, want %q", tc.vm.Status.Phase, err, tc.want)
		}
	}
}

func FuzzParsePortPair(f *testing.F) {
	for _, s := range []string{"8080:80", "22", ":5432", "0:0", "1:2:3", "-1", "99999", "+8", "08:010"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parsePortPair(s)
		if err != nil {
			return
		}
		if p.Remote < 1 || p.Remote > 65535 || p.Local < 0 || p.Local > 65535 {
			t.Fatalf("parsePortPair(%q) = %v: out of range", s, p)
		}
	})
}

func FuzzParseSCPPath(f *testing.F) {
	for _, s := range []string{"cloud@vm:/tmp", "./a:b", "/x:y", "vm:", "@vm:x", "a@b@c:d", "Bad:x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseSCPPath(s)
		if err != nil {
			return
		}
		if p.VM == "" {
			if p.Path != s {
				t.Fatalf("parseSCPPath(%q): local path %q changed", s, p.Path)
			}
			return
		}
		// A VM's path must come back as scp would read it, naming only a valid VM.
		if _, err := parseVMRef(p.VM); err != nil {
			t.Fatalf("parseSCPPath(%q) took VM %q: %v", s, p.VM, err)
		}
		o := sshOptions{Namespace: "ns"}
		if arg := p.scpArg(&o); !strings.HasSuffix(arg, ":"+p.Path) || strings.Contains(arg[:len(arg)-len(p.Path)-1], "/") {
			t.Fatalf("parseSCPPath(%q) → scp argument %q", s, arg)
		}
	})
}
