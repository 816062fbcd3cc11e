// Package failover runs `ferry-bench failover` (RunFailover): a node of a `ferry up`
// cluster fails (power off, network cut, agent frozen) and the benchmark times each step
// until its VM runs again on another node, checking that two instances of the VM never
// ran at once (bench.InstanceWatch, bench.ProcessWatch); and `ferry-bench false-fencing`
// (RunFalseFencing): healthy nodes under load, counting those fenced or reset anyway, per
// fencing profile.
package failover
