package kubelet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// The launcher's exit codes after its VM moved to another node, and when a newer instance
// of its VM holds the disk lease (this one was fenced and must not run).
const (
	exitMigrated   = v1alpha2.LauncherExitMigrated
	exitSuperseded = v1alpha2.LauncherExitSuperseded
)

// syncMigration is the VM handler's part of a live migration, through the pod's
// annotations: it publishes where a target listens, starts or cancels an outgoing migration
// when the migration controller asks, and reports its progress.
func (k *Kubelet) syncMigration(ctx context.Context, pod *corev1.Pod, p *process) error {
	exited := p.exited() // before the exit code, which is set before the end is signalled
	p.mu.Lock()
	g, started, aborted, code := p.guest, p.migrateReq, p.aborted, p.exitCode
	p.mu.Unlock()
	if exited {
		// The launcher leaves the last word on a completed migration in a file.
		if code != exitMigrated || k.o.FinalMigration == nil {
			return nil
		}
		final, err := k.o.FinalMigration(p.runDir)
		if err != nil {
			return nil
		}
		g.Migration = final
	}

	ann := map[string]any{}
	if g.IncomingURI != "" && pod.Annotations[v1alpha2.AnnotationIncomingURI] != g.IncomingURI {
		ann[v1alpha2.AnnotationIncomingURI] = g.IncomingURI
	}
	if raw := pod.Annotations[v1alpha2.AnnotationMigrateTo]; raw != "" && raw != started && k.o.Migrate != nil {
		var req v1alpha2.MigrationRequest
		err := json.Unmarshal([]byte(raw), &req)
		if err == nil {
			err = k.checkTarget(ctx, req)
		}
		if err == nil {
			err = k.o.Migrate(ctx, p.runDir, req)
		}
		p.mu.Lock()
		p.migrateReq, p.aborted = raw, false
		p.mu.Unlock()
		started, aborted = raw, false
		if err != nil {
			b, _ := json.Marshal(v1alpha2.MigrationProgress{Status: "failed", Error: err.Error()})
			ann[v1alpha2.AnnotationMigrationStatus] = string(b)
			k.log.Error(err, "Could not start the migration", "pod", pod.Namespace+"/"+pod.Name)
		} else {
			k.log.Info("Started migration", "pod", pod.Namespace+"/"+pod.Name, "to", req.URI)
			// Its progress is watched closely from now, not from the next slow probe on.
			select {
			case p.kick <- struct{}{}:
			default:
			}
		}
	}
	if pod.Annotations[v1alpha2.AnnotationMigrationAbort] == "true" && !aborted && k.o.CancelMigration != nil {
		if err := k.o.CancelMigration(ctx, p.runDir); err != nil {
			k.log.Error(err, "Could not cancel the migration", "pod", pod.Namespace+"/"+pod.Name)
		}
		p.mu.Lock()
		p.aborted = true
		p.mu.Unlock()
	}
	var current v1alpha2.MigrationRequest
	_ = json.Unmarshal([]byte(started), &current)
	// Only the migration asked for now is reported: the launcher keeps an earlier one's end.
	// QEMU's "setup" (before the first byte goes) is not: it says no more than the request
	// does, and lasts a few milliseconds; "active" follows with the first figures.
	if g.Migration != nil && g.Migration.URI == current.URI && current.URI != "" && g.Migration.Status != "setup" {
		if b, _ := json.Marshal(g.Migration); pod.Annotations[v1alpha2.AnnotationMigrationStatus] != string(b) {
			if wait := p.progressWait(pod.Annotations[v1alpha2.AnnotationMigrationStatus], g.Migration, time.Now()); wait > 0 {
				k.queue.AddAfter(p.uid, wait)
			} else {
				ann[v1alpha2.AnnotationMigrationStatus] = string(b)
			}
		}
	}
	if len(ann) == 0 {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	_, err := k.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// progressEvery is how often at most the pod's annotation follows a migration's progress
// (figures only: a change of its state, such as its completion, is written at once). The
// launcher is probed every closeWatch meanwhile; writing each probe made a pod write and
// an operation status write every 100 ms of every transfer, on the CPU the transfer needs.
const progressEvery = 500 * time.Millisecond

// progressWait is how long the migration's progress now waits before it is written over
// the pod's annotation written (0: write it now, and count from now).
func (p *process) progressWait(written string, now *v1alpha2.MigrationProgress, at time.Time) time.Duration {
	var prev v1alpha2.MigrationProgress
	p.mu.Lock()
	defer p.mu.Unlock()
	if json.Unmarshal([]byte(written), &prev) != nil || prev.Status != now.Status || prev.URI != now.URI {
		p.progressAt = at
		return 0
	}
	if wait := p.progressAt.Add(progressEvery).Sub(at); wait > 0 {
		return wait
	}
	p.progressAt = at
	return 0
}

// checkTarget refuses a migration to anywhere but another node of the cluster, at one of
// the addresses its Node lists: the guest's memory goes only to a node. Only Ferry's
// controller may write the request (deploy/base's ValidatingAdmissionPolicy
// ferry-launcher-pods); this holds even where that policy is missing, and with migration
// TLS the launcher also holds the target to that node's certificate.
func (k *Kubelet) checkTarget(ctx context.Context, req v1alpha2.MigrationRequest) error {
	if req.TargetNode == "" {
		return errors.New("the migration request names no target node")
	}
	if req.TargetNode == k.o.NodeName {
		return fmt.Errorf("the migration request's target node %s is this node", req.TargetNode)
	}
	rest, ok := strings.CutPrefix(req.URI, "tcp:")
	if !ok {
		return fmt.Errorf("the migration request's uri %q is not tcp:HOST:PORT", req.URI)
	}
	host, _, err := net.SplitHostPort(rest)
	if err != nil {
		return fmt.Errorf("the migration request's uri %q: %w", req.URI, err)
	}
	node, err := k.client.CoreV1().Nodes().Get(ctx, req.TargetNode, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the migration's target node %s: %w", req.TargetNode, err)
	}
	for _, a := range node.Status.Addresses {
		if a.Address == host {
			return nil
		}
	}
	return fmt.Errorf("the migration request's address %s is not one of node %s's", host, req.TargetNode)
}
