// Package pinger measures whether an address keeps answering, and how long it does not:
// it sends an ICMP echo request at a steady cadence (every 10 ms by default) and records,
// for every probe, when it was sent and whether and when its reply came. Tests and
// benchmarks point it at a VM's address during a live migration and read the lost
// probes and the network downtime from the Result.
//
// A Pinger uses a privileged raw ICMP socket ("ip4:icmp"), so it needs root or
// CAP_NET_RAW. The kernel gives every raw ICMP socket a copy of every ICMP packet the
// machine receives, so each run picks its own echo identifier and keeps only the echo
// replies that
//
//   - come from the target address,
//   - carry the run's identifier,
//   - carry the run's random cookie in their payload (another process may use the same
//     identifier), and
//   - carry a sequence number of a probe the run sent.
//
// Several Pingers may run at once, in one process or several.
//
// The sequence number is 16 bits on the wire and comes round after 65536 probes (about
// 11 minutes at 10 ms). The Pinger counts probes with an int and maps a reply's wire
// number back to the latest probe with those low 16 bits; a Timeout of at most 32767
// intervals keeps every reply that can still count within that window. The payload
// repeats the full counter, so a reply even later than that is dropped rather than
// taken for a newer probe.
//
// Timing comes first. Probes are sent from a time.Ticker, so a slow send delays one
// probe, not all later ones. A send that fails (for instance "network is unreachable"
// while a route is briefly missing at a migration's switchover) is recorded as a probe
// sent and not answered, and the Pinger keeps going: that is an outage like any other.
// Round trip times come from the kernel's receive timestamp (SO_TIMESTAMPNS) where the
// kernel gives one, so a reader goroutine that is scheduled late does not inflate them.
//
// A probe is lost when no reply came within Timeout (1 s by default); a later reply marks
// it Late but it stays lost. An Outage is a run of consecutive lost probes; its length
// runs from the send time of its first lost probe to the send time of the first answered
// probe after it, so it is known to about one Interval. Result.Between cuts a result down
// to a window, such as the seconds around a migration's switchover.
//
// Probes held in a queue during an outage and answered in a burst once it ends count as
// answered if their replies come within Timeout, only with long round trips. That
// happens when the sending host must resolve the target's MAC address again: the
// kernel queues the probes until the next ARP attempt, up to a second later. Downtime
// then understates the outage; Result.LongestSilence, the longest time in which no
// reply arrived, does not. A shorter Timeout also counts such probes as lost.
//
// The package knows nothing of VMs or Kubernetes; it touches only its own socket.
package pinger
