// Package evacuation makes `kubectl drain` move VMs instead of killing them.
//
// An admission webhook on pods/eviction refuses (429) the eviction of a launcher pod whose
// VM still runs there, marks the VM (annotation AnnotationEvacuateFrom, condition
// EvictionRequired) and says in its answer what happens to the VM. The controller here
// turns that mark into one evacuation VirtualMachineOperation (type Evict) at a time,
// backs off when evacuations fail, stops when the node is uncordoned, and keeps the VM's
// Migratable condition saying whether the VM could move now, and if not why. kubectl
// drain retries the eviction until the pod is gone: the source pod ends when its VM has
// moved, and the eviction of an ended pod is let through.
package evacuation
