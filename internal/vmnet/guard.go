package vmnet

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The guard: source-address validation on a VM's tap. The guest is the tenant's, so
// everything it sends is untrusted; the guard lets through only what the VM's address may
// send and drops the rest where it enters the node, before routing, ARP or any socket:
//
//	table netdev ferry-<tap>-<instance> {             # as `nft list table` shows it
//	    counter spoofed { }    # IPv4 or ARP that claims another address or MAC
//	    counter other { }      # everything else: IPv6, VLAN tags, other protocols
//	    chain ingress {
//	        type filter hook ingress device "<tap>" priority filter; policy drop;
//	        ether saddr <MAC> ip saddr <VM> accept
//	        ether saddr <MAC> ip saddr 0.0.0.0 udp dport 67 accept
//	        ether saddr <MAC> arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether <MAC> arp saddr ip <VM> accept
//	        ether saddr <MAC> arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether <MAC> arp saddr ip 0.0.0.0 accept
//	        ether type ip counter name "spoofed" drop
//	        ether type arp counter name "spoofed" drop
//	        counter name "other" drop
//	    }
//	}
//
// The DHCP exception is a client without an address asking for one (our server answers);
// the ARP one is an address probe (RFC 5227), which Linux never learns from. A netdev
// table sees every protocol in one chain, and its ingress hook runs before the kernel's
// IPv4, IPv6 and ARP handlers, so no rp_filter setting (the node's conf.all wins) decides.
//
// Each launcher instance makes a table of its own (the instance part of the name is
// random), so that an instance removing its table as it exits never removes its
// successor's: a new instance for the VM takes the tap as soon as the old QEMU lets go,
// which may be before the old launcher is done. It does so in one batch that also deletes the tables earlier instances left for the same
// tap: only the tap's holder installs, and a tap has one holder, so what it finds is stale.
// An instance removes its own table once its tap is gone (Tap.Release); the agent removes
// those whose tap is gone that a killed launcher left (PrepareNode).

// guardPrefix starts every guard table's name; the tap's name follows.
const guardPrefix = "ferry-"

// The guard's named counters.
const (
	counterSpoofed = "spoofed"
	counterOther   = "other"
)

// Drops is what a tap's guard dropped, in packets.
type Drops struct {
	Spoofed uint64 // IPv4 or ARP from another address or MAC than the VM's
	Other   uint64 // anything else: IPv6, VLAN-tagged frames, other protocols
}

// guard is one instance's guard table on a tap.
type guard struct {
	table *nftables.Table
}

// guardTableName is a new instance's table name for the tap.
func guardTableName(tap string) (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return guardPrefix + tap + "-" + hex.EncodeToString(b[:]), nil
}

// tapOfGuard is the tap a guard table is for; ok is false for tables not Ferry's.
func tapOfGuard(table string) (tap string, ok bool) {
	rest, ok := strings.CutPrefix(table, guardPrefix)
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '-')
	if i <= 0 {
		return "", false
	}
	return rest[:i], true
}

// installGuard guards the tap (which must exist, and be held by this process or its
// QEMU) for a guest with MAC mac and address addr, replacing any guard an earlier
// instance left on a tap of this name. The table, its counters, chain and rules, and the
// removal of stale tables, are one netlink batch: the tap is never half-guarded.
func installGuard(tap string, mac net.HardwareAddr, addr netip.Addr) (*guard, error) {
	name, err := guardTableName(tap)
	if err != nil {
		return nil, err
	}
	g := &guard{table: &nftables.Table{Name: name, Family: nftables.TableFamilyNetdev}}
	// A stale table can vanish between the listing and the batch (its launcher removing
	// it as it exits), failing the batch; a fresh listing then no longer has it.
	for attempt := 0; ; attempt++ {
		err = g.install(tap, mac, addr)
		if err == nil || !errors.Is(err, unix.ENOENT) || attempt == 2 {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("guarding tap %s against spoofed sources with nftables (the node's kernel needs nf_tables with the netdev family, the launcher CAP_NET_ADMIN): %w", tap, err)
	}
	return g, nil
}

func (g *guard) install(tap string, mac net.HardwareAddr, addr netip.Addr) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	stale, err := guardTables(c, func(t string) bool { return t == tap })
	if err != nil {
		return err
	}
	for _, t := range stale {
		c.DelTable(t)
	}
	t := c.AddTable(g.table)
	for _, name := range []string{counterSpoofed, counterOther} {
		c.AddObj(&nftables.NamedObj{Table: t, Name: name, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
	}
	policy := nftables.ChainPolicyDrop
	ch := c.AddChain(&nftables.Chain{
		Name: "ingress", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookIngress, Priority: nftables.ChainPriorityFilter,
		Device: tap, Policy: &policy,
	})
	for _, exprs := range guardRules(mac, addr) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}
	return c.Flush()
}

// Ethernet types, as the rules compare them.
var (
	etherIPv4 = []byte{0x08, 0x00}
	etherARP  = []byte{0x08, 0x06}
)

// guardRules are the guard chain's rules, in order (see the table at the top). Each
// field is a comparison of its own, after the link type (Ethernet, which a tap is), so
// that `nft list table` shows them by name as nft would have written them.
func guardRules(mac net.HardwareAddr, addr netip.Addr) [][]expr.Any {
	vm := addr.AsSlice()
	unspecified := []byte{0, 0, 0, 0}
	etherType := func(t []byte) []expr.Any {
		return concatExprs([]expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_ETHER)},
		}, match(expr.PayloadBaseLLHeader, 12, t))
	}
	from := func(t []byte) []expr.Any {
		return concatExprs(etherType(t), match(expr.PayloadBaseLLHeader, 6, mac))
	}
	// ARP for Ethernet and IPv4 (hardware type 1, protocol 0x0800, lengths 6 and 4)
	// from the guest's MAC and ip.
	arpFrom := func(ip []byte) []expr.Any {
		return concatExprs(from(etherARP),
			match(expr.PayloadBaseNetworkHeader, 0, []byte{0, 1}),
			match(expr.PayloadBaseNetworkHeader, 2, etherIPv4),
			match(expr.PayloadBaseNetworkHeader, 4, []byte{6}),
			match(expr.PayloadBaseNetworkHeader, 5, []byte{4}),
			match(expr.PayloadBaseNetworkHeader, 8, mac),
			match(expr.PayloadBaseNetworkHeader, 14, ip),
			verdict(expr.VerdictAccept))
	}
	return [][]expr.Any{
		concatExprs(from(etherIPv4), match(expr.PayloadBaseNetworkHeader, 12, vm), verdict(expr.VerdictAccept)),
		concatExprs(from(etherIPv4), match(expr.PayloadBaseNetworkHeader, 12, unspecified),
			[]expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			},
			match(expr.PayloadBaseTransportHeader, 2, binary.BigEndian.AppendUint16(nil, 67)),
			verdict(expr.VerdictAccept)),
		arpFrom(vm),
		arpFrom(unspecified),
		concatExprs(etherType(etherIPv4), countAndDrop(counterSpoofed)),
		concatExprs(etherType(etherARP), countAndDrop(counterSpoofed)),
		countAndDrop(counterOther),
	}
}

// match compares len(want) bytes at offset of base with want.
func match(base expr.PayloadBase, offset uint32, want []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: offset, Len: uint32(len(want))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: want},
	}
}

func countAndDrop(counter string) []expr.Any {
	return []expr.Any{&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: counter}, &expr.Verdict{Kind: expr.VerdictDrop}}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func concatExprs(parts ...[]expr.Any) []expr.Any {
	var e []expr.Any
	for _, p := range parts {
		e = append(e, p...)
	}
	return e
}

// drops reads the guard's counters.
func (g *guard) drops() (Drops, error) {
	c, err := nftables.New()
	if err != nil {
		return Drops{}, err
	}
	var d Drops
	for _, n := range []struct {
		name string
		to   *uint64
	}{{counterSpoofed, &d.Spoofed}, {counterOther, &d.Other}} {
		o, err := c.GetObject(&nftables.NamedObj{Table: g.table, Name: n.name, Type: nftables.ObjTypeCounter})
		if err != nil {
			return Drops{}, fmt.Errorf("reading counter %s of table %s: %w", n.name, g.table.Name, err)
		}
		if named, ok := o.(*nftables.NamedObj); ok {
			if ctr, ok := named.Obj.(*expr.Counter); ok {
				*n.to = ctr.Packets
			}
		}
	}
	return d, nil
}

// remove deletes the guard's table; one already gone is no error.
func (g *guard) remove() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.DelTable(g.table)
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing table %s: %w", g.table.Name, err)
	}
	return nil
}

// guardTables lists Ferry's guard tables whose tap the filter picks.
func guardTables(c *nftables.Conn, pick func(tap string) bool) ([]*nftables.Table, error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyNetdev)
	if err != nil {
		return nil, fmt.Errorf("listing netdev tables: %w", err)
	}
	var out []*nftables.Table
	for _, t := range ts {
		if tap, ok := tapOfGuard(t.Name); ok && pick(tap) {
			out = append(out, t)
		}
	}
	return out, nil
}

// sweepGuards removes the guard tables of taps that no longer exist: what launchers killed
// outright (a node reset) left behind. They guard nothing (their tap is gone), but they
// mislead whoever reads `nft list ruleset`. A table listed while its tap was missing is
// stale even if a tap of that name appears since: its new holder makes a table of its own.
func sweepGuards() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	stale, err := guardTables(c, func(tap string) bool {
		_, err := netlink.LinkByName(tap)
		var nf netlink.LinkNotFoundError
		return errors.As(err, &nf)
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range stale {
		if err := (&guard{table: t}).remove(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
