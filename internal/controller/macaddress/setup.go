package macaddress

import (
	"context"
	"crypto/rand"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryvm/ferry/internal/macaddr"
)

// ClusterPrefix is the prefix of the cluster's allocated MAC addresses: derived from the
// UID of namespace kube-system, which lives as long as the cluster does (the identity
// Kubernetes tools use for a cluster).
func ClusterPrefix(ctx context.Context, r client.Reader) (macaddr.Prefix, error) {
	var ns corev1.Namespace
	if err := r.Get(ctx, client.ObjectKey{Name: "kube-system"}, &ns); err != nil {
		return macaddr.Prefix{}, fmt.Errorf("reading namespace kube-system, whose UID gives the cluster's MAC address prefix: %w", err)
	}
	return macaddr.PrefixOf(string(ns.UID)), nil
}

// Setup registers the indexes and both controllers.
func Setup(ctx context.Context, mgr ctrl.Manager) error {
	if err := Index(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	prefix, err := ClusterPrefix(ctx, mgr.GetAPIReader())
	if err != nil {
		return err
	}
	ctrl.LoggerFrom(ctx).Info("Allocating VMs' MAC addresses in the cluster's prefix", "prefix", prefix.String())
	if err := (&Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("vmmac-controller"), APIReader: mgr.GetAPIReader(), Prefix: prefix, Rand: rand.Reader}).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&LeaseReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("vmmacl-controller"), APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr)
}
