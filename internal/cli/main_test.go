package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// helperAddressEnv makes the test binary act as `ferry` with every VM at the address it
// names ("stopped": every VM Stopped): ssh runs it as the ProxyCommand in the end-to-end
// tests, with no cluster.
const helperAddressEnv = "FERRY_CLI_TEST_VM_ADDRESS"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperAddressEnv); addr != "" {
		os.Exit(runAsFerry(addr, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func runAsFerry(addr string, args []string) int {
	if len(args) == 0 || args[0] != "v" {
		fmt.Fprintf(os.Stderr, "test helper: want `v VERB ...`, got %q\n", args)
		return 2
	}
	g := &Globals{
		Kubeconfig: func() string { return "/nonexistent/kubeconfig" },
		Out:        os.Stdout,
		resolver: func(ctx context.Context, namespace, name string) (Endpoint, error) {
			if addr == "stopped" {
				return endpointOf(&v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
					Status: v1alpha2.VirtualMachineStatus{Phase: v1alpha2.MachineStopped}})
			}
			return Endpoint{Namespace: namespace, Name: name, Address: addr}, nil
		},
	}
	cmd := newCommand(g)
	cmd.SilenceUsage = true // as ferry's root command
	cmd.SetArgs(args[1:])
	if err := cmd.Execute(); err != nil {
		return ExitCode(err)
	}
	return 0
}

// helperCommand runs this test binary as `ferry ARGS...` with VMs at addr.
func helperCommand(t *testing.T, addr string, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), helperAddressEnv+"="+addr)
	return cmd
}

func itoa(i int) string { return strconv.Itoa(i) }
