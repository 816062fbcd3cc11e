package vmnet

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TapMAC is the MAC of every VM's tap on every node: the guest's neighbour entries for
// its gateway and other addresses point at it, so they stay valid wherever the VM moves.
var TapMAC = net.HardwareAddr{0x02, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe}

// GuestMAC is the MAC of the VM's NIC, made from its address: unique while addresses
// are, the same on a migration's source and target, locally administered.
func GuestMAC(addr netip.Addr) net.HardwareAddr {
	a := addr.As4()
	return net.HardwareAddr{0x02, 0x66, a[0], a[1], a[2], a[3]}
}

// TapName is the tap device of the VM with address addr: "ft" and the address in hex
// (ft0a420a05 for 10.66.10.5), unique on a node and within the 15 bytes Linux allows.
func TapName(addr netip.Addr) string {
	a := addr.As4()
	return "ft" + hex.EncodeToString(a[:])
}

// NIC is one VM's network identity on a node.
type NIC struct {
	Address  netip.Prefix // the guest's address and the VM range's length: 10.66.10.5/24
	Gateway  netip.Addr   // the guest's default gateway (answered by proxy ARP on the tap)
	MAC      net.HardwareAddr
	Hostname string
}

// Validate says what is wrong with the NIC's settings.
func (n NIC) Validate() error {
	switch {
	case !n.Address.IsValid() || !n.Address.Addr().Is4():
		return fmt.Errorf("VM address %q is not an IPv4 address with a prefix length (such as 10.66.10.5/24)", n.Address)
	case n.Address.Bits() < 1 || n.Address.Bits() > 30:
		return fmt.Errorf("VM address %s: the prefix length must be 1 to 30", n.Address)
	case !n.Gateway.Is4() || !n.Address.Masked().Contains(n.Gateway) || n.Gateway == n.Address.Addr():
		return fmt.Errorf("gateway %s must be an address of %s other than the VM's", n.Gateway, n.Address.Masked())
	case len(n.MAC) != 6:
		return fmt.Errorf("VM MAC %q is not a 6-byte Ethernet address", n.MAC)
	}
	return nil
}

// Tap is a VM's tap device, open in this process until handed to QEMU.
type Tap struct {
	Name string
	nic  NIC
	file *os.File
	// index is the tap's interface index; uplink the link the address is announced on,
	// both looked up once, so that Attach at a switchover does only what must be done then.
	index  int
	uplink netlink.Link
	guard  *guard
}

// File is the tap's descriptor, for QEMU's -netdev tap,fd=N. Close it once QEMU holds it:
// the tap then lives exactly as long as QEMU.
func (t *Tap) File() *os.File { return t.file }

// CloseFile closes this process's descriptor of the tap.
func (t *Tap) CloseFile() error {
	if t.file == nil {
		return nil
	}
	err := t.file.Close()
	t.file = nil
	return err
}

// Lease is what the tap's DHCP server hands the guest.
func (t *Tap) Lease() Lease {
	return Lease{MAC: t.nic.MAC, Address: t.nic.Address, Gateway: t.nic.Gateway, Hostname: t.nic.Hostname, MTU: 1500}
}

// ifReq is struct ifreq as TUNSETIFF reads it: a name and the flags.
type ifReq struct {
	name  [unix.IFNAMSIZ]byte
	flags uint16
	_     [22]byte
}

// OpenTap creates the VM's tap device (TapName of its address) and readies it: TapMAC,
// the guard (only the guest's MAC and address may send; see guard.go), up, proxy ARP
// with no delay, no IPv6, and a permanent neighbour entry for the guest, so the node
// never has to ask for it. The device is not persistent: it goes with the last
// descriptor. A tap of the same name whose holder is still exiting (the VM's previous
// QEMU on this node) is waited for, up to wait.
func OpenTap(n NIC, wait time.Duration) (*Tap, error) {
	if err := n.Validate(); err != nil {
		return nil, err
	}
	name := TapName(n.Address.Addr())
	f, err := openTun(name, wait)
	if err != nil {
		return nil, err
	}
	t := &Tap{Name: name, nic: n, file: f}
	if err := t.configure(); err != nil {
		f.Close() // the tap goes with it, so its guard may too
		if t.guard != nil {
			t.guard.remove()
		}
		return nil, fmt.Errorf("setting up tap %s: %w", name, err)
	}
	return t, nil
}

func openTun(name string, wait time.Duration) (*os.File, error) {
	deadline := time.Now().Add(wait)
	for {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening /dev/net/tun (the node needs the tun module, and an unprivileged launcher pod the resource devices.virtualization.ferryvm.io/tun): %w", err)
		}
		var req ifReq
		copy(req.name[:unix.IFNAMSIZ-1], name)
		req.flags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req)))
		if errno == 0 {
			return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
		}
		unix.Close(fd)
		if errno != unix.EBUSY || time.Now().After(deadline) {
			if errno == unix.EBUSY {
				return nil, fmt.Errorf("creating tap %s: another process still holds it (an earlier QEMU of this VM on this node?)", name)
			}
			if errno == unix.EPERM {
				return nil, fmt.Errorf("creating tap %s: %w (the launcher needs CAP_NET_ADMIN)", name, errno)
			}
			return nil, fmt.Errorf("creating tap %s: %w", name, errno)
		}
		time.Sleep(100 * time.Millisecond) // poll: the old holder's exit has no event to wait on
	}
}

func (t *Tap) configure() error {
	link, err := netlink.LinkByName(t.Name)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetHardwareAddr(link, TapMAC); err != nil {
		return fmt.Errorf("setting its MAC: %w", err)
	}
	index := link.Attrs().Index
	t.index = index
	// Guarded before it is up: not one frame of the guest's passes unchecked.
	if t.guard, err = installGuard(t.Name, t.nic.MAC, t.nic.Address.Addr()); err != nil {
		return err
	}
	if err := setProxyARP(index); err != nil {
		return err
	}
	if err := setProxyDelay(index, 0); err != nil {
		return err
	}
	if err := noIPv6(link, t.Name); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting it up: %w", err)
	}
	guest := &netlink.Neigh{
		LinkIndex: index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: net.IP(t.nic.Address.Addr().AsSlice()), HardwareAddr: t.nic.MAC,
	}
	if err := netlink.NeighSet(guest); err != nil {
		return fmt.Errorf("adding the guest's neighbour entry: %w", err)
	}
	if t.uplink, err = Uplink(t.nic.Gateway); err != nil {
		return err
	}
	return nil
}

// Drops reads what the tap's guard has dropped so far.
func (t *Tap) Drops() (Drops, error) {
	if t.guard == nil {
		return Drops{}, nil
	}
	return t.guard.drops()
}

// Release closes this process's descriptor of the tap and, once the tap is gone (its
// QEMU exited), removes the tap's guard; it returns what the guard dropped. While the tap
// still exists (a QEMU that still holds it), the guard stays and Release says so: it
// goes when the tap has (PrepareNode, or the next instance for this address).
func (t *Tap) Release() (Drops, error) {
	t.CloseFile()
	if t.guard == nil {
		return Drops{}, nil
	}
	d, derr := t.guard.drops()
	l, err := netlink.LinkByIndex(t.index)
	if err == nil && l.Attrs().Name == t.Name {
		return d, fmt.Errorf("tap %s still exists (held by a process still running), so its guard %s stays", t.Name, t.guard.table.Name)
	}
	if err := t.guard.remove(); err != nil {
		return d, err
	}
	t.guard = nil
	return d, derr
}

// writeSysctl writes /proc/sys/net/<path> of this process's network namespace.
func writeSysctl(path, value string) error {
	p := filepath.Join("/proc/sys/net", path)
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return nil
}
