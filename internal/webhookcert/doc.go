// Package webhookcert gives the admission webhooks of `ferry controller` their TLS
// certificate without cert-manager (--webhook-cert-mode=self).
//
// It owns three things:
//   - a CA kept in a Secret (ferry-system/ferry-webhook-ca by default), created by the
//     first replica that finds none and shared by every replica;
//   - each replica's own serving certificate and key, issued from that CA in the replica's
//     memory and written into the directory that controller-runtime's webhook server
//     watches (the key never leaves the pod);
//   - the caBundle of Ferry's webhook configurations, named by flags.
//
// Rotation: a serving certificate is replaced after two thirds of its life, or as soon as
// another CA signs. The CA is replaced with an overlap: after two thirds of its life a
// next CA is added to every caBundle; after five sixths, once every configuration trusts
// it, it starts signing; the old CA stays in the bundle until it expires, and serving
// certificates never outlive their CA, so no certificate a replica serves is ever missing
// from the bundle (see schedule.go). A CA made afresh (first install, a deleted Secret, a
// switch from cert-manager) keeps what the caBundles trusted until that ends, so replicas
// still serving an older certificate are not refused while they move.
//
// Every replica runs the whole loop (it needs no leader: each must issue its own
// certificate). Writes to the Secret and to the configurations are updates on the
// resourceVersion read, so two replicas never undo each other's step; the loser of a
// conflict reads again.
//
// It does not touch the webhook server itself, the Service, or any Secret but its own.
package webhookcert
