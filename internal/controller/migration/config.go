package migration

import (
	"context"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The configuration object: settings in it override the controller's flags for migrations
// that start after a change, so an operator can tune a running cluster.
const (
	ConfigNamespace = "ferry-system"
	ConfigName      = "ferry-config"
)

// effective returns the configuration with the ConfigMap's settings applied. Keys:
// migrationBandwidth (a quantity per second, e.g. 512Mi), migrationDowntimeLimit,
// migrationCompletionTimeoutPerGiB, migrationProgressTimeout, migrationSchedulingTimeout
// (durations), migrationsPerNodeOutbound (a count).
func (r *Reconciler) effective(ctx context.Context) (Config, error) {
	c := r.Config
	if r.APIReader == nil {
		return c, nil
	}
	var cm corev1.ConfigMap
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ConfigNamespace, Name: ConfigName}, &cm); err != nil {
		if apierrors.IsNotFound(err) {
			return c, nil
		}
		return c, err
	}
	var errs []error
	if v, ok := cm.Data["migrationBandwidth"]; ok {
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Value() <= 0 {
			errs = append(errs, fmt.Errorf("migrationBandwidth %q: want a positive quantity such as 512Mi", v))
		} else {
			c.MaxBandwidthBytes = q.Value()
		}
	}
	for key, dst := range map[string]*time.Duration{
		"migrationDowntimeLimit":           &c.DowntimeLimit,
		"migrationCompletionTimeoutPerGiB": &c.CompletionTimeoutPerGiB,
		"migrationProgressTimeout":         &c.ProgressTimeout,
		"migrationSchedulingTimeout":       &c.SchedulingTimeout,
	} {
		if v, ok := cm.Data[key]; ok {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				errs = append(errs, fmt.Errorf("%s %q: want a positive duration such as 300ms", key, v))
				continue
			}
			*dst = d
		}
	}
	if v, ok := cm.Data["migrationsPerNodeOutbound"]; ok {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			c.MaxOutboundPerNode = n
		}
	}
	if len(errs) > 0 {
		return r.Config, fmt.Errorf("ConfigMap %s/%s: %v", ConfigNamespace, ConfigName, errs)
	}
	return c, nil
}
