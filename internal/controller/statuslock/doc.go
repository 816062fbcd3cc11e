// Package statuslock holds no code: its test checks that every status patch in
// internal/controller carries the object's resourceVersion (client.MergeFromWithOptions
// with client.MergeFromWithOptimisticLock), so that no writer of a status loses another
// writer's update (issue 19). The writers of each status field are listed in the doc of
// internal/controller.
package statuslock
