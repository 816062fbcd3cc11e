// Package vmpool runs VirtualMachinePools (Deckhouse's kind): a pool keeps spec.replicas
// VirtualMachines made from its virtualMachineTemplate, each with its own disks made from
// virtualDiskTemplates.
//
// It owns the pool's replicas (VMs named <pool>-<random>, labelled with the pool's name,
// UID and template hash, controlled by the pool), their disks and the pool's status. It
// writes no VM's or disk's status, and never spec.replicas (people and autoscalers write
// it, through the scale subresource or the spec).
//
// Disks: a template with reclaim Delete gives each replica a disk <replica>-<template>
// controlled by the VM: it goes with the VM (the garbage collector, and this controller
// once the VM is gone, for clusters without one). A template with reclaim Retain gives
// disks <pool>-<template>-<random> controlled by the pool: when their replica goes they
// are free (annotation free-since), a later replica takes the most recently freed one,
// and free disks beyond reclaim.keep are deleted reclaim.ttl after they were freed. A
// disk still named by any replica, Terminating ones included, is never deleted.
//
// Scale-down removes the newest or oldest replicas (scaleDownPolicy); under Explicit the
// CRD refuses a lower spec.replicas, and Deckhouse's scaleDownWith subresource (removal
// by name, an aggregated API) is not served by Ferry. A VM deleted by hand is replaced at
// once. Admission is the CRD's (CEL): no webhook is needed, so the rules hold also for a
// controller run without its webhook server. Replicas are not rolled to a changed
// template: status.updatedReplicas and the Synced condition say how many are on it.
//
// Replicas and disks are read past the cache (APIReader): a replica just made must never
// look absent, or its disks would look free or orphaned.
package vmpool
