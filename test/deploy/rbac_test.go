package deploy

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// grant is what a ServiceAccount may do and which code needs it (the rule's comment in
// controller-rbac.yaml or agent-rbac.yaml says more). namespace "" is every namespace
// (a ClusterRole); names nil is any object.
type grant struct {
	group, resource, namespace string
	names                      []string
	verbs                      string
	why                        string
}

const vd = "virtualization.deckhouse.io"

var controllerGrants = []grant{
	{vd, "virtualmachines", "", nil, "get list watch create update patch delete", "cache; finalizer; power-state, fencing-token, evacuate-from annotations; pool replicas made and removed; a Clone makes a VM"},
	{vd, "virtualmachines/status", "", nil, "patch", "vm, evacuation, fencing, migration status"},
	{vd, "virtualmachines/finalizers", "", nil, "update", "blockOwnerDeletion on launcher pods"},
	{vd, "virtualmachineoperations", "", nil, "get list watch create update patch", "cache; evacuation creates Evict; migration finalizer; power annotation"},
	{vd, "virtualmachineoperations/status", "", nil, "patch", "power, migration status"},
	{vd, "virtualdisks", "", nil, "get list watch create update patch delete", "cache; disk finalizer; pool disks made, marked free (annotation) and collected; Restore makes disks again, Clone makes new ones"},
	{vd, "virtualdisks/status", "", nil, "patch", "provisioning, attachment"},
	{vd, "clustervirtualimages", "", nil, "get list watch update", "cache; image finalizer"},
	{vd, "clustervirtualimages/status", "", nil, "patch", "import"},
	{vd, "virtualimages", "", nil, "get list watch update", "cache; upload endpoint; image finalizer"},
	{vd, "virtualimages/status", "", nil, "patch", "import"},
	{vd, "virtualmachineclasses", "", nil, "get list watch create update patch", "cache; webhook; generic at the first start; class finalizer (patch), uninstall (update)"},
	{vd, "virtualmachineclasses/status", "", nil, "patch", "class status"},
	{vd, "virtualmachineipaddresses", "", nil, "get list watch create update delete", "vmip controller; a VM's own vmip; vmip finalizer"},
	{vd, "virtualmachineipaddresses/status", "", nil, "patch", "vmip status"},
	{vd, "virtualmachineipaddressleases", "", nil, "get list watch create patch delete deletecollection", "take, release and expire addresses"},
	{vd, "virtualmachineipaddressleases/status", "", nil, "patch", "lease status"},
	{vd, "virtualmachinemacaddresses", "", nil, "get list watch create update delete", "vmmac controller; a VM's own vmmac; vmmac finalizer"},
	{vd, "virtualmachinemacaddresses/status", "", nil, "patch", "vmmac status"},
	{vd, "virtualmachinemacaddressleases", "", nil, "get list watch create patch delete", "take and free MAC addresses"},
	{vd, "virtualmachinemacaddressleases/status", "", nil, "patch", "MAC lease status"},
	{"", "namespaces", "", []string{"kube-system"}, "get", "the cluster's identity gives its MAC address prefix"},
	{vd, "nodeusbdevices", "", nil, "get list watch", "NodeUSBDevice controller; the USBDevice controller reads them"},
	{vd, "nodeusbdevices/status", "", nil, "update", "NodeUSBDevice status"},
	{vd, "usbdevices", "", nil, "get list watch create delete", "a NodeUSBDevice's USBDevice in its assigned namespace; the vm controller reads them"},
	{vd, "usbdevices/status", "", nil, "update", "USBDevice status"},
	{vd, "virtualmachineblockdeviceattachments", "", nil, "get list watch update", "cache; vmbda finalizer"},
	{vd, "virtualmachineblockdeviceattachments/status", "", nil, "patch", "vmbda status"},
	{vd, "virtualdisksnapshots", "", nil, "get list watch update create", "cache; snapshot finalizer; a VM snapshot takes one per disk"},
	{vd, "virtualdisksnapshots/status", "", nil, "patch", "snapshot status"},
	{vd, "virtualmachinepools", "", nil, "get list watch", "pool controller cache"},
	{vd, "virtualmachinepools/status", "", nil, "patch", "pool status"},
	{vd, "virtualmachinepools/finalizers", "", nil, "update", "blockOwnerDeletion on a pool's replicas and Retain disks"},
	{vd, "virtualmachinesnapshots", "", nil, "get list watch create", "cache; a Clone snapshots its VM"},
	{vd, "virtualmachinesnapshots/status", "", nil, "patch", "VM snapshot status"},
	{vd, "virtualmachinesnapshotoperations", "", nil, "get list watch", "cache"},
	{vd, "virtualmachinesnapshotoperations/status", "", nil, "patch", "vmsop status"},
	{"deckhouse.io", "nodegroups", "", nil, "get list watch", "fencing"},
	{"deckhouse.io", "nodegroups/status", "", nil, "patch", "fencing status"},
	{"", "pods", "", nil, "get list watch create patch delete", "launcher pods, migration targets"},
	{"", "pods/status", "", nil, "update", "fencing ends a fenced node's pods"},
	{"", "nodes", "", nil, "get list watch patch delete", "placement, fencing taints an unreachable Node and removes a fenced one"},
	{"", "events", "", nil, "create patch", "event recorders"},
	{"", "secrets", "", nil, "get list watch create", "provisioning: a metadata-only watch wakes VMs, the one Secret is read past the cache; a VM snapshot's Secret (a policy allows those and the CA only)"},
	{"certificates.k8s.io", "certificatesigningrequests", "", nil, "get list watch", "migration signer's cache"},
	{"certificates.k8s.io", "certificatesigningrequests/approval", "", nil, "update", "migration signer approves or denies"},
	{"certificates.k8s.io", "certificatesigningrequests/status", "", nil, "update", "migration signer issues certificates"},
	{"certificates.k8s.io", "signers", "", []string{"virtualization.ferryvm.io/migration"}, "approve sign", "the migration signer, of its own signerName only"},
	{"", "secrets", "ferry-system", []string{"ferry-migration-ca"}, "get update", "the migration CA: read, filled in on first need"},
	{"coordination.k8s.io", "leases", "ferry-system", nil, "create", "leader election"},
	{"coordination.k8s.io", "leases", "ferry-system", []string{"ferry-controller"}, "get update", "leader election"},
	{"", "configmaps", "ferry-system", []string{"ferry-config"}, "get", "migration settings"},
	{"", "configmaps", "ferry-system", nil, "create", "the record that generic was installed"},
	{"", "configmaps", "ferry-system", []string{"ferry-install-state"}, "get update", "the record that generic was installed"},
	{"", "secrets", "ferry-system", nil, "create", "webhookcert creates the webhooks' CA Secret (a policy allows that one only)"},
	{"", "secrets", "ferry-system", []string{"ferry-webhook-ca"}, "get update", "webhookcert reads the webhooks' CA, rotates it"},
	{"admissionregistration.k8s.io", "validatingwebhookconfigurations", "", []string{"ferry-eviction", "ferry-virtualmachine"}, "get update", "webhookcert sets the webhooks' caBundle"},
	{"admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", []string{"ferry-virtualmachine"}, "get update", "webhookcert sets the mutating webhook's caBundle"},
	{"coordination.k8s.io", "leases", "kube-node-lease", nil, "get list watch delete", "fencing reads heartbeats, removes a fenced node's"},
	{"coordination.k8s.io", "leases", "ferry-node-lease", nil, "get list watch delete", "fencing reads the agents' heartbeats, removes a fenced node's"},
	{"apiextensions.k8s.io", "customresourcedefinitions", "", []string{"virtualmachines.virtualization.deckhouse.io", "virtualmachineoperations.virtualization.deckhouse.io",
		"virtualdisks.virtualization.deckhouse.io", "clustervirtualimages.virtualization.deckhouse.io", "virtualimages.virtualization.deckhouse.io", "virtualmachineclasses.virtualization.deckhouse.io", "virtualmachineblockdeviceattachments.virtualization.deckhouse.io", "virtualdisksnapshots.virtualization.deckhouse.io"}, "get", "uninstall: is the CRD of a deleted object being deleted"},
}

var agentGrants = []grant{
	{"", "nodes", "", nil, "get list watch patch", "Lease owner, fencing cache, peers, watchdog annotations"},
	{"", "nodes/status", "", nil, "patch", "the Node's fencing condition (that condition only: policy)"},
	{"", "pods", "", nil, "get list watch patch", "the node's pods: run directory and migration annotations"},
	{"", "pods/status", "", nil, "patch", "the guest-ready readiness gate"},
	{"deckhouse.io", "nodegroups", "", nil, "get list watch", "fencing settings"},
	{"coordination.k8s.io", "leases", "ferry-node-lease", nil, "get create update", "the agent's heartbeat, which its watchdog is fed after"},
	{"", "events", "default", nil, "create", "NodeReset event"},
	{"certificates.k8s.io", "certificatesigningrequests", "", nil, "get list watch create", "the node's migration certificate"},
}

// probe is one question to the authorizer.
type probe struct {
	group, resource, namespace, name, verb string
}

func (p probe) String() string {
	s := p.verb + " " + p.resource
	if p.group != "" {
		s += "." + p.group
	}
	if p.name != "" {
		s += " " + p.name
	}
	if p.namespace != "" {
		s += " in " + p.namespace
	}
	return s
}

// allowedBy tells whether grants allow p, with RBAC's rules: a Role's grant holds in its
// namespace only; a grant with names holds only for a request that names one of them.
func allowedBy(grants []grant, p probe) bool {
	for _, g := range grants {
		if g.group != p.group || g.resource != p.resource || !slices.Contains(strings.Fields(g.verbs), p.verb) {
			continue
		}
		if g.namespace != "" && g.namespace != p.namespace {
			continue
		}
		if g.names != nil && !slices.Contains(g.names, p.name) {
			continue
		}
		return true
	}
	return false
}

// TestRolesAllowExactlyWhatTheCodeUses asks kube-apiserver (SubjectAccessReview) for every
// verb on every resource the two ServiceAccounts use, and on others they must not touch, in
// Ferry's namespace, the system namespaces, a user's namespace and all namespaces at once,
// and compares with the grants above.
func TestRolesAllowExactlyWhatTheCodeUses(t *testing.T) {
	install(t)
	type resource struct {
		group, name string
		namespaced  bool
	}
	universe := []resource{
		{vd, "virtualmachines", true}, {vd, "virtualmachines/status", true}, {vd, "virtualmachines/finalizers", true},
		{vd, "virtualmachineoperations", true}, {vd, "virtualmachineoperations/status", true},
		{vd, "virtualdisks", true}, {vd, "virtualdisks/status", true},
		{vd, "clustervirtualimages", false}, {vd, "clustervirtualimages/status", false},
		{vd, "virtualimages", true}, {vd, "virtualimages/status", true},
		{vd, "virtualmachineclasses", false}, {vd, "virtualmachineclasses/status", false},
		{vd, "virtualmachineipaddresses", true}, {vd, "virtualmachineipaddresses/status", true},
		{vd, "virtualmachineipaddressleases", false}, {vd, "virtualmachineipaddressleases/status", false},
		{vd, "virtualmachinemacaddresses", true}, {vd, "virtualmachinemacaddresses/status", true},
		{vd, "virtualmachinemacaddressleases", false}, {vd, "virtualmachinemacaddressleases/status", false},
		{vd, "nodeusbdevices", false}, {vd, "nodeusbdevices/status", false},
		{vd, "usbdevices", true}, {vd, "usbdevices/status", true},
		{vd, "virtualmachineblockdeviceattachments", true}, {vd, "virtualmachineblockdeviceattachments/status", true},
		{vd, "virtualdisksnapshots", true}, {vd, "virtualdisksnapshots/status", true},
		{vd, "virtualmachinepools", true}, {vd, "virtualmachinepools/status", true}, {vd, "virtualmachinepools/finalizers", true}, {vd, "virtualmachinepools/scale", true},
		{vd, "virtualmachinesnapshots", true}, {vd, "virtualmachinesnapshots/status", true},
		{vd, "virtualmachinesnapshotoperations", true}, {vd, "virtualmachinesnapshotoperations/status", true},
		{"deckhouse.io", "nodegroups", false}, {"deckhouse.io", "nodegroups/status", false},
		{"", "pods", true}, {"", "pods/status", true}, {"", "pods/eviction", true}, {"", "pods/exec", true}, {"", "pods/binding", true},
		{"", "nodes", false}, {"", "nodes/status", false}, {"", "nodes/proxy", false},
		{"", "events", true}, {"events.k8s.io", "events", true},
		{"", "configmaps", true}, {"", "secrets", true}, {"", "serviceaccounts", true}, {"", "serviceaccounts/token", true},
		{"", "services", true}, {"", "namespaces", false},
		{"coordination.k8s.io", "leases", true},
		{"apps", "deployments", true}, {"apps", "daemonsets", true},
		{"rbac.authorization.k8s.io", "clusterroles", false}, {"rbac.authorization.k8s.io", "rolebindings", true},
		{"admissionregistration.k8s.io", "validatingadmissionpolicies", false},
		{"certificates.k8s.io", "certificatesigningrequests", false}, {"certificates.k8s.io", "certificatesigningrequests/approval", false},
		{"certificates.k8s.io", "certificatesigningrequests/status", false}, {"certificates.k8s.io", "signers", false},
		{"admissionregistration.k8s.io", "validatingwebhookconfigurations", false}, {"admissionregistration.k8s.io", "mutatingwebhookconfigurations", false},
		{"apiextensions.k8s.io", "customresourcedefinitions", false},
	}
	verbs := []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
	// Signers take verbs of their own, on a signer's name (or its domain/*).
	signerVerbs := []string{"approve", "sign"}
	signerNames := []string{"virtualization.ferryvm.io/migration", "virtualization.ferryvm.io/other", "kubernetes.io/kubelet-serving", "kubernetes.io/kube-apiserver-client"}
	namespaces := []string{"", namespace, "kube-node-lease", "ferry-node-lease", "default", "vms"}
	names := map[string][]string{"configmaps": {"ferry-config", "ferry-install-state", "other"}, "leases": {"ferry-controller", "other"},
		"secrets": {"ferry-webhook-ca", "ferry-migration-ca", "other"}, "validatingwebhookconfigurations": {"ferry-eviction", "ferry-virtualmachine", "other"},
		"mutatingwebhookconfigurations": {"ferry-virtualmachine", "other"},
		"namespaces":                    {"kube-system", "other"},
		"customresourcedefinitions":     {"virtualmachines.virtualization.deckhouse.io", "virtualdisks.virtualization.deckhouse.io", "virtualmachineclasses.virtualization.deckhouse.io", "nodegroups.deckhouse.io", "other.example.com"}}
	var probes []probe
	for _, n := range signerNames {
		for _, v := range signerVerbs {
			probes = append(probes, probe{"certificates.k8s.io", "signers", "", n, v})
		}
	}
	for _, r := range universe {
		nss := []string{""}
		if r.namespaced {
			nss = namespaces
		}
		for _, ns := range nss {
			for _, v := range verbs {
				probes = append(probes, probe{r.group, r.name, ns, "", v})
				if slices.Contains([]string{"get", "update", "patch", "delete"}, v) {
					for _, n := range names[r.name] {
						probes = append(probes, probe{r.group, r.name, ns, n, v})
					}
				}
			}
		}
	}

	for _, sa := range []struct {
		user   string
		grants []grant
	}{{ctrlUser, controllerGrants}, {agentUser, agentGrants}} {
		// Roles reach the authorizer's cache a moment after they are written.
		eventually(t, 30*time.Second, sa.user+"'s roles in force", func() (bool, string) {
			for _, g := range sa.grants {
				p := probe{g.group, g.resource, g.namespace, "", strings.Fields(g.verbs)[0]}
				if g.names != nil {
					p.name = g.names[0]
				}
				if ok, err := allowed(sa.user, p); !ok {
					return false, fmt.Sprintf("%s: allowed %v, %v", p, ok, err)
				}
			}
			return true, ""
		})
		got := make([]bool, len(probes))
		errs := make([]error, len(probes))
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for i, p := range probes {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				got[i], errs[i] = allowed(sa.user, p)
			})
		}
		wg.Wait()
		// What the server allowed, by request (resource and name) and namespace.
		may := map[string]map[string][]string{}
		refused := 0
		for i, p := range probes {
			if errs[i] != nil {
				t.Fatalf("SubjectAccessReview %s for %s: %v", p, sa.user, errs[i])
			}
			want := allowedBy(sa.grants, p)
			switch {
			case got[i] && !want:
				t.Errorf("%s may %s, which no code of it needs", sa.user, p)
			case !got[i] && want:
				t.Errorf("%s may not %s, which its code needs", sa.user, p)
			}
			if !got[i] {
				refused++
				continue
			}
			key := probe{group: p.group, resource: p.resource, name: p.name}
			k := strings.TrimSpace(key.String())
			if may[k] == nil {
				may[k] = map[string][]string{}
			}
			may[k][p.namespace] = append(may[k][p.namespace], p.verb)
		}
		var lines []string
		for k, byNS := range may {
			all := byNS[""]
			everywhere := all != nil
			for _, ns := range namespaces[1:] {
				everywhere = everywhere && slices.Equal(byNS[ns], all)
			}
			if everywhere || len(byNS) == 1 && all != nil {
				lines = append(lines, fmt.Sprintf("%s: %s", k, strings.Join(all, " ")))
				continue
			}
			for ns, v := range byNS {
				lines = append(lines, fmt.Sprintf("%s in %s: %s", k, ns, strings.Join(v, " ")))
			}
		}
		sort.Strings(lines)
		t.Logf("%s: %d requests refused, %d allowed:\n  %s", sa.user, refused, len(probes)-refused, strings.Join(lines, "\n  "))
	}
}

// allowed asks kube-apiserver whether the ServiceAccount user may make the request.
func allowed(user string, p probe) (bool, error) {
	resource, sub, _ := strings.Cut(p.resource, "/")
	ns := strings.Split(strings.TrimPrefix(user, "system:serviceaccount:"), ":")[0]
	r, err := adminCS.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: p.namespace, Verb: p.verb, Group: p.group, Resource: resource, Subresource: sub, Name: p.name,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return r.Status.Allowed, nil
}
