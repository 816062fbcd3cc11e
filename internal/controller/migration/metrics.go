package migration

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	migrationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_migrations_total",
		Help: "Live migrations that ended, by result (Succeeded, Failed, Aborted).",
	}, []string{"result"})
	migrationDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ferry_migration_duration_seconds",
		Help:    "Time from a migration operation's start to its end.",
		Buckets: prometheus.ExponentialBuckets(0.5, 2, 10),
	})
	migrationDowntime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ferry_migration_downtime_seconds",
		Help:    "Guest pause at switchover, as QEMU measured it.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5},
	})
)

func init() {
	metrics.Registry.MustRegister(migrationsTotal, migrationDuration, migrationDowntime)
}
