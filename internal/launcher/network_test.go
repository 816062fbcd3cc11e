package launcher

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestNetworkGuardedUntilReleased: the launcher's tap is guarded from the moment it
// exists (before QEMU has it), and its guard goes when the launcher releases the tap,
// with what it dropped in the log.
func TestNetworkGuardedUntilReleased(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to create a network namespace and a tap: run the tests as root (make test does)")
	}
	var log bytes.Buffer
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread, and its namespace, end with it
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- guardedUntilReleased(&logger{w: &log})
	}()
	if err := <-errc; err != nil {
		t.Fatalf("%v\nlog:\n%s", err, log.String())
	}
	if want := "the guard dropped 1 packets from other addresses and 0 of other protocols"; !strings.Contains(log.String(), want) {
		t.Errorf("log does not say %q:\n%s", want, log.String())
	}
}

func guardedUntilReleased(lg *logger) error {
	// The uplink with the VM range on-link, as the agent leaves it.
	up := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up1"}
	if err := netlink.LinkAdd(up); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(up); err != nil {
		return err
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Scope: netlink.SCOPE_LINK,
		Dst: &net.IPNet{IP: net.IPv4(10, 66, 10, 0), Mask: net.CIDRMask(24, 32)}}); err != nil {
		return err
	}
	nw, err := openNetwork(Options{VMName: "vm", IP: "10.66.10.5/24", Gateway: "10.66.10.1"}, lg)
	if err != nil {
		return err
	}
	tables := func() ([]string, error) {
		c, err := nftables.New()
		if err != nil {
			return nil, err
		}
		ts, err := c.ListTablesOfFamily(nftables.TableFamilyNetdev)
		var names []string
		for _, t := range ts {
			names = append(names, t.Name)
		}
		return names, err
	}
	names, err := tables()
	if err != nil || len(names) != 1 || !strings.HasPrefix(names[0], "ferry-ft0a420a05-") {
		return fmt.Errorf("netdev tables with the tap open: %q, want one ferry-ft0a420a05-…: %v", names, err)
	}
	// The guest claims 10.66.10.6 in an ARP request for its gateway, behind the tap's
	// virtio-net header (IFF_VNET_HDR: 10 bytes, all zero for no offloads).
	guestMAC := []byte{0x02, 0x66, 10, 66, 10, 5}
	frame := make([]byte, 10)
	frame = append(frame, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	frame = append(frame, guestMAC...)
	frame = append(frame, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1)
	frame = append(frame, guestMAC...)
	frame = append(frame, 10, 66, 10, 6, 0, 0, 0, 0, 0, 0, 10, 66, 10, 1)
	if _, err := nw.tap.File().Write(frame); err != nil {
		return err
	}
	nw.release()
	if names, err := tables(); err != nil || len(names) != 0 {
		return fmt.Errorf("netdev tables after release: %q, want none: %v", names, err)
	}
	return nil
}
