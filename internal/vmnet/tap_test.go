package vmnet

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inNewNetns runs f on a thread of its own in a new network namespace; the thread ends
// with it (it stays locked), and the namespace with the thread.
func inNewNetns(t *testing.T, f func() error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root to create a network namespace and a tap: run the tests as root (make test does)")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestOpenTapSettings: the tap's settings, made by netlink where they can be (an
// unprivileged launcher's /proc/sys is read-only), read back from /proc/sys.
func TestOpenTapSettings(t *testing.T) {
	nic := NIC{Address: netip.MustParsePrefix("10.66.10.5/24"), Gateway: netip.MustParseAddr("10.66.10.1"),
		MAC: GuestMAC(netip.MustParseAddr("10.66.10.5"))}
	want := map[string]string{
		"ipv4/conf/ft0a420a05/proxy_arp":     "1",
		"ipv4/neigh/ft0a420a05/proxy_delay":  "0",
		"ipv6/conf/ft0a420a05/addr_gen_mode": "1", // none
		"ipv6/conf/ft0a420a05/disable_ipv6":  "1", // /proc/sys is writable here
	}
	var got map[string]string
	var link netlink.Link
	var neighs []netlink.Neigh
	inNewNetns(t, func() error {
		// The uplink: the VM range on-link on it, as PrepareNode leaves it (a veth: this
		// kernel may have no dummy links).
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
		tap, err := OpenTap(nic, time.Second)
		if err != nil {
			return err
		}
		defer tap.CloseFile()
		got = map[string]string{}
		for k := range want {
			b, err := os.ReadFile("/proc/sys/net/" + k)
			if err != nil {
				return err
			}
			got[k] = strings.TrimSpace(string(b))
		}
		if link, err = netlink.LinkByName(tap.Name); err != nil {
			return err
		}
		neighs, err = netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
		return err
	})
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if a := link.Attrs(); a.HardwareAddr.String() != TapMAC.String() || a.Flags&net.FlagUp == 0 {
		t.Errorf("tap: MAC %s, flags %v; want %s, up", a.HardwareAddr, a.Flags, TapMAC)
	}
	if len(neighs) != 1 || neighs[0].State != netlink.NUD_PERMANENT || neighs[0].HardwareAddr.String() != nic.MAC.String() {
		t.Errorf("neighbours on the tap: %+v, want the guest's, permanent", neighs)
	}
}
