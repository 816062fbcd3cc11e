package launcher

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/vmnet"
)

// tapWait is how long a new instance waits for its VM's previous QEMU on this node to let
// go of the tap.
const tapWait = 10 * time.Second

// network is the VM's NIC on this node and whether the node holds its address.
type network struct {
	tap *vmnet.Tap
	log *logger

	mu       sync.Mutex
	attached bool
	stopAnn  context.CancelFunc // ends the announcements of the last Attach
}

// nicOf reads the network options; ok is false when the VM has no NIC.
func nicOf(o Options) (vmnet.NIC, bool, error) {
	if o.IP == "" {
		return vmnet.NIC{}, false, nil
	}
	addr, err := netip.ParsePrefix(o.IP)
	if err != nil {
		return vmnet.NIC{}, false, fmt.Errorf("--ip %q is not an address with a prefix length (such as 10.66.10.5/24)", o.IP)
	}
	gw, err := netip.ParseAddr(o.Gateway)
	if err != nil {
		return vmnet.NIC{}, false, fmt.Errorf("--gateway %q is not an IPv4 address", o.Gateway)
	}
	n := vmnet.NIC{Address: addr, Gateway: gw, MAC: vmnet.GuestMAC(addr.Addr()), Hostname: o.VMName}
	if o.MAC != "" {
		if n.MAC, err = net.ParseMAC(o.MAC); err != nil {
			return vmnet.NIC{}, false, fmt.Errorf("--mac %q: %v", o.MAC, err)
		}
	}
	return n, true, n.Validate()
}

// openNetwork creates the VM's tap; nil, nil when the VM has no NIC.
func openNetwork(o Options, lg *logger) (*network, error) {
	nic, ok, err := nicOf(o)
	if err != nil || !ok {
		return nil, err
	}
	tap, err := vmnet.OpenTap(nic, tapWait)
	if err != nil {
		return nil, err
	}
	lg.printf("NIC %s on tap %s, address %s, gateway %s", nic.MAC, tap.Name, nic.Address, nic.Gateway)
	return &network{tap: tap, log: lg}, nil
}

// qemuNIC is the NIC as QEMU gets it.
func (n *network) qemuNIC() []hypervisor.NIC {
	if n == nil {
		return nil
	}
	return []hypervisor.NIC{{Tap: n.tap.File(), MAC: n.tap.Lease().MAC.String()}}
}

// serveDHCP answers the guest's DHCP until ctx ends.
func (n *network) serveDHCP(ctx context.Context) {
	if n == nil {
		return
	}
	if err := vmnet.ServeDHCP(ctx, n.tap.Name, n.tap.Lease(), n.log.printf); err != nil {
		n.log.printf("DHCP on %s: %v (the guest gets no address)", n.tap.Name, err)
	}
}

// attach makes this node the VM's address's home (route, proxy ARP, announcements).
// It is idempotent.
func (n *network) attach(why string) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.attached {
		return
	}
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	if err := n.tap.Attach(ctx); err != nil {
		cancel()
		n.log.printf("the VM's address does not move here (%s): %v", why, err)
		return
	}
	n.attached, n.stopAnn = true, cancel
	n.log.printf("address %s now routed to this node (%s) in %v", n.tap.Lease().Address.Addr(), why, time.Since(start).Round(time.Microsecond))
}

// detach gives the address up on this node if it holds it.
func (n *network) detach(why string) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.attached {
		return
	}
	n.stopAnn()
	n.attached = false
	if err := n.tap.Detach(); err != nil {
		n.log.printf("giving up address %s (%s): %v", n.tap.Lease().Address.Addr(), why, err)
		return
	}
	n.log.printf("address %s given up on this node (%s)", n.tap.Lease().Address.Addr(), why)
}

// release lets go of the tap once QEMU is gone: its guard goes with it, and the log says
// what the guard dropped (a guest that tried to send as another address, or IPv6).
func (n *network) release() {
	if n == nil {
		return
	}
	d, err := n.tap.Release()
	if d.Spoofed > 0 || d.Other > 0 {
		n.log.printf("tap %s: the guard dropped %d packets from other addresses and %d of other protocols (IPv6, ...)", n.tap.Name, d.Spoofed, d.Other)
	}
	if err != nil {
		n.log.printf("tap %s: %v", n.tap.Name, err)
	}
}

// onEvent moves the address with the guest: a migration target takes it when its guest
// resumes, a source gives it up when its migration completed.
func (l *launcher) onEvent(ev hypervisor.Event) {
	switch ev.Name {
	case "RESUME":
		if l.incomingURI != "" {
			l.net.attach("incoming migration completed")
		}
	case "STOP":
		if l.migrating() {
			l.log.printf("guest paused for the switchover")
		}
	case "MIGRATION":
		var d struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(ev.Data, &d) == nil && d.Status == "completed" && l.incomingURI == "" {
			l.net.detach("the guest migrated away")
		}
	}
}

// migrating tells whether an outgoing migration is under way.
func (l *launcher) migrating() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mig != nil && l.migStatus != nil && !l.migStatus.Finished()
}
