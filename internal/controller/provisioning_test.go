package controller_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/nocloud"
)

// waitProvisioning waits for the VM's ProvisioningReady condition to have status and a
// message that contains msg.
func waitProvisioning(t *testing.T, ns, name string, status metav1.ConditionStatus, msg string) *v1alpha2.VirtualMachine {
	t.Helper()
	var vm *v1alpha2.VirtualMachine
	eventually(t, timeout, fmt.Sprintf("VM %s ProvisioningReady=%s %q", name, status, msg), func() (bool, string) {
		vm = getVM(t, ns, name)
		c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionProvisioningReady)
		if c == nil {
			return false, "no condition"
		}
		want := v1alpha2.ReasonProvisioningReady
		if status == metav1.ConditionFalse {
			want = v1alpha2.ReasonProvisioningNotReady
		}
		return c.Status == status && c.Reason == want && strings.Contains(c.Message, msg), fmt.Sprintf("%+v", c)
	})
	return vm
}

// seedOf returns the path of the pod's CD-ROM disk, which must be its last disk.
func seedOf(t *testing.T, pod corev1.Pod) string {
	t.Helper()
	var disks []string
	args := pod.Spec.Containers[0].Args
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--disk" {
			disks = append(disks, args[i+1])
		}
	}
	if len(disks) < 2 {
		t.Fatalf("pod %s has disks %q; want the boot disk and a seed", pod.Name, disks)
	}
	last := disks[len(disks)-1]
	path, ok := strings.CutSuffix(last, ":raw:cdrom")
	if !ok {
		t.Fatalf("last disk %q: want PATH:raw:cdrom", last)
	}
	return path
}

func newSecret(ns, name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

// TestProvisioningUserData: inline user-data reaches the launcher pod as a CD-ROM whose
// NoCloud files name the VM, its NIC and the user's data; the seed goes with the VM.
func TestProvisioningUserData(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	vm := newVM(ns, "web-server-1", "root", v1alpha2.AlwaysOn)
	userData := "#cloud-config\nusers:\n- name: cloud\n  ssh_authorized_keys: [ssh-ed25519 AAAA test]\n"
	vm.Spec.Provisioning = &v1alpha2.Provisioning{Type: v1alpha2.ProvisioningUserData, UserData: userData}
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	vm = waitProvisioning(t, ns, vm.Name, metav1.ConditionTrue, "attached as a CD-ROM")
	pod := waitPod(t, ns, vm.Name)
	seed := seedOf(t, pod)

	label, files, err := nocloud.ReadISO(seed)
	if err != nil {
		t.Fatal(err)
	}
	if label != nocloud.LabelNoCloud {
		t.Errorf("label %q", label)
	}
	if string(files["user-data"]) != userData {
		t.Errorf("user-data %q, want %q", files["user-data"], userData)
	}
	if want := fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", vm.UID, vm.Name); string(files["meta-data"]) != want {
		t.Errorf("meta-data %q, want %q", files["meta-data"], want)
	}
	// The NIC's MAC is its VirtualMachineMACAddress's, which the launcher is given.
	mac := getVM(t, ns, vm.Name).MainNetworkStatus()
	if mac == nil || mac.MACAddress == "" || !strings.Contains(string(files["network-config"]), `macaddress: "`+mac.MACAddress+`"`) {
		t.Errorf("network-config does not match the NIC's MAC %+v:\n%s", mac, files["network-config"])
	}
	if pods := livePods(t, ns, vm.Name); mac != nil && len(pods) == 1 && !strings.Contains(strings.Join(pods[0].Spec.Containers[0].Args, " "), "--mac "+mac.MACAddress) {
		t.Errorf("the launcher is not given the MAC %s of the seed: %v", mac.MACAddress, pods[0].Spec.Containers[0].Args)
	}

	deleteVM(t, ns, vm.Name)
	if _, err := os.Stat(seed); !os.IsNotExist(err) {
		t.Errorf("seed %s left after the VM was deleted: %v", seed, err)
	}
}

// TestProvisioningWaitsForSecret: a VM whose Secret is missing says so and does not start;
// the Secret's creation starts it.
func TestProvisioningWaitsForSecret(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	vm := newVM(ns, "vm", "root", v1alpha2.AlwaysOn)
	vm.Spec.Provisioning = &v1alpha2.Provisioning{Type: v1alpha2.ProvisioningUserDataRef,
		UserDataRef: &v1alpha2.UserDataRef{Kind: v1alpha2.SecretRefKind, Name: "cloud-init"}}
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteVM(t, ns, vm.Name) })
	waitProvisioning(t, ns, vm.Name, metav1.ConditionFalse, `Secret "cloud-init" not found`)
	eventually(t, timeout, "Running says why the VM waits", func() (bool, string) {
		c := meta.FindStatusCondition(getVM(t, ns, vm.Name).Status.Conditions, v1alpha2.VMConditionRunning)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, `Secret "cloud-init" not found`), fmt.Sprintf("%+v", c)
	})
	if pods := livePods(t, ns, vm.Name); len(pods) != 0 {
		t.Fatalf("the VM started without its provisioning: %d pods", len(pods))
	}

	if err := k8s.Create(ctx, newSecret(ns, "cloud-init", map[string]string{"userData": "#cloud-config\n"})); err != nil {
		t.Fatal(err)
	}
	waitProvisioning(t, ns, vm.Name, metav1.ConditionTrue, "UserDataRef seed")
	pod := waitPod(t, ns, vm.Name)
	_, files, err := nocloud.ReadISO(seedOf(t, pod))
	if err != nil {
		t.Fatal(err)
	}
	if string(files["user-data"]) != "#cloud-config\n" {
		t.Errorf("user-data %q", files["user-data"])
	}
}

// TestProvisioningSecretWithoutKey: a Secret without userData is named in the condition;
// adding the key starts the VM.
func TestProvisioningSecretWithoutKey(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	sec := newSecret(ns, "ci", map[string]string{"user-data": "#cloud-config\n"})
	if err := k8s.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	vm := newVM(ns, "vm", "root", v1alpha2.AlwaysOn)
	vm.Spec.Provisioning = &v1alpha2.Provisioning{Type: v1alpha2.ProvisioningUserDataRef,
		UserDataRef: &v1alpha2.UserDataRef{Kind: v1alpha2.SecretRefKind, Name: "ci"}}
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteVM(t, ns, vm.Name) })
	waitProvisioning(t, ns, vm.Name, metav1.ConditionFalse, `Secret "ci" has no key "userData"`)
	if pods := livePods(t, ns, vm.Name); len(pods) != 0 {
		t.Fatalf("the VM started without its provisioning: %d pods", len(pods))
	}

	sec.Data["userData"] = []byte("#cloud-config\n")
	if err := k8s.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	waitProvisioning(t, ns, vm.Name, metav1.ConditionTrue, "seed")
	waitPod(t, ns, vm.Name)
}

// TestProvisioningSysprep: a Sysprep Secret's files reach the guest on a CD-ROM under
// their own names.
func TestProvisioningSysprep(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	if err := k8s.Create(ctx, newSecret(ns, "sysprep", map[string]string{"autounattend.xml": "<unattend/>"})); err != nil {
		t.Fatal(err)
	}
	vm := newVM(ns, "win", "root", v1alpha2.AlwaysOn)
	vm.Spec.Provisioning = &v1alpha2.Provisioning{Type: v1alpha2.ProvisioningSysprepRef,
		SysprepRef: &v1alpha2.SysprepRef{Kind: v1alpha2.SecretRefKind, Name: "sysprep"}}
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteVM(t, ns, vm.Name) })
	waitProvisioning(t, ns, vm.Name, metav1.ConditionTrue, "SysprepRef seed")
	_, files, err := nocloud.ReadISO(seedOf(t, waitPod(t, ns, vm.Name)))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || string(files["autounattend.xml"]) != "<unattend/>" {
		t.Errorf("files %q", files)
	}
}

// TestProvisioningValidation: the apiserver refuses provisioning that does not hold
// together, saying what to fix.
func TestProvisioningValidation(t *testing.T) {
	ns := newNamespace(t)
	ref := &v1alpha2.UserDataRef{Kind: v1alpha2.SecretRefKind, Name: "s"}
	for _, tc := range []struct {
		name string
		p    v1alpha2.Provisioning
		want string
	}{
		{"userData too long", v1alpha2.Provisioning{Type: v1alpha2.ProvisioningUserData, UserData: strings.Repeat("é", 1025)}, "2048-byte limit"},
		{"UserData without userData", v1alpha2.Provisioning{Type: v1alpha2.ProvisioningUserData}, "type UserData needs userData"},
		{"UserDataRef without ref", v1alpha2.Provisioning{Type: v1alpha2.ProvisioningUserDataRef}, "type UserDataRef needs userDataRef"},
		{"two sources", v1alpha2.Provisioning{Type: v1alpha2.ProvisioningUserData, UserData: "x", UserDataRef: ref}, "userDataRef goes only with type UserDataRef"},
		{"unknown type", v1alpha2.Provisioning{Type: "Ignition"}, "SysprepRef"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := newVM(ns, "bad", "root", "")
			vm.Spec.Provisioning = &tc.p
			err := k8s.Create(ctx, vm)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	vm := newVM(ns, "good", "root", v1alpha2.AlwaysOff)
	vm.Spec.Provisioning = &v1alpha2.Provisioning{Type: v1alpha2.ProvisioningUserData, UserData: strings.Repeat("a", 2048)}
	if err := k8s.Create(ctx, vm); err != nil {
		t.Errorf("2048 bytes of userData refused: %v", err)
	}
}

// TestMigrationTargetGetsTheSameSeed: a migration target reads the source's very seed
// file, and a seed that a pod names stays while the provisioning changes under it.
func TestMigrationTargetGetsTheSameSeed(t *testing.T) {
	ns := newNamespace(t)
	nodeA, _ := migrationNodes(t, ns)
	makeImageDisk(t, ns, "d")
	vm := newVM(ns, "m", "d", v1alpha2.AlwaysOn)
	vm.Spec.Provisioning = &v1alpha2.Provisioning{Type: v1alpha2.ProvisioningUserData, UserData: "#cloud-config\n"}
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteVM(t, ns, "m") })
	source := waitPod(t, ns, "m")
	runPod(t, &source, nodeA)
	waitPhase(t, ns, "m", v1alpha2.MachineRunning)
	seed := seedOf(t, source)

	if err := k8s.Create(ctx, newOp(ns, "ev", "m", v1alpha2.OpEvict)); err != nil {
		t.Fatal(err)
	}
	var target corev1.Pod
	eventually(t, timeout, "a migration target pod", func() (bool, string) {
		for _, p := range livePods(t, ns, "m") {
			if _, ok := p.Labels[v1alpha2.LabelMigrationTarget]; ok {
				target = p
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d live pods", len(livePods(t, ns, "m")))
	})
	if got := seedOf(t, target); got != seed {
		t.Fatalf("target's seed %s, source's %s", got, seed)
	}

	// The controller writes the VM too (its fencing token): read it again on a conflict.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		vm = getVM(t, ns, "m")
		vm.Spec.Provisioning.UserData = "#cloud-config\nhostname: changed\n"
		return k8s.Update(ctx, vm)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "a new seed for the changed user-data", func() (bool, string) {
		c := meta.FindStatusCondition(getVM(t, ns, "m").Status.Conditions, v1alpha2.VMConditionProvisioningReady)
		return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == vm.Generation && !strings.Contains(c.Message, filepath.Base(seed)), fmt.Sprintf("%+v", c)
	})
	if _, err := os.Stat(seed); err != nil {
		t.Fatalf("the seed the source and target pods name was removed: %v", err)
	}
}
