// Package personality lets the ferry binary behave like the upstream
// kube-apiserver and etcd programs, so that tools which exec those binaries
// (controller-runtime's envtest looks them up in $KUBEBUILDER_ASSETS) can use
// symlinks to ferry instead. The caller dispatches on the basename of
// os.Args[0].
package personality

import (
	"os"
	"path/filepath"
	"strings"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// Names of the programs this package can impersonate.
const (
	KubeAPIServerName = "kube-apiserver"
	EtcdName          = "etcd"
)

// KubeAPIServer runs kube-apiserver with args (without the program name) and
// returns its exit code. It installs SIGTERM/SIGINT handling and configures
// process-global logging exactly like the real binary, so it must be the only
// thing the process does.
func KubeAPIServer(args []string) int {
	cmd := apiserverapp.NewAPIServerCommand()
	if args == nil {
		args = []string{}
	}
	cmd.SetArgs(args)
	return cli.Run(cmd)
}

// Etcd runs etcd with args (without the program name) and returns its exit
// code. Like the real binary, etcd may terminate the process itself (on
// fatal errors, --help and on SIGTERM/SIGINT after a clean shutdown).
func Etcd(args []string) int {
	etcdmain.Main(append([]string{EtcdName}, args...))
	return 0
}

// Lookup returns the personality for a program path such as os.Args[0]
// ("/x/kube-apiserver", "etcd.exe"), or nil when it names none.
func Lookup(program string) func(args []string) int {
	name := strings.TrimSuffix(filepath.Base(program), ".exe")
	switch name {
	case KubeAPIServerName:
		return KubeAPIServer
	case EtcdName:
		return Etcd
	}
	return nil
}

// Main runs the personality selected by os.Args[0] and exits; it returns
// without doing anything when os.Args[0] names no personality.
func Main() {
	if run := Lookup(os.Args[0]); run != nil {
		os.Exit(run(os.Args[1:]))
	}
}
