package hypervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// File names inside Config.RunDir.
const (
	QMPSocketName    = "qmp.sock"
	SerialSocketName = "serial.sock"
	SerialLogName    = "serial.log"
	VNCSocketName    = "vnc.sock" // the VM's screen: QEMU's VNC server, on no network address
	PIDFileName      = "qemu.pid"
	QEMULogName      = "qemu.log"
	// GuestAgentSocketName is the host end of the guest agent's virtio-serial channel
	// (org.qemu.guest_agent.0): package guestagent talks to qemu-ga through it.
	GuestAgentSocketName = "qga.sock"
)

// GuestAgentChannel is the name of the virtio-serial port the QEMU guest agent opens in the
// guest (/dev/virtio-ports/org.qemu.guest_agent.0); distributions start qemu-ga when it
// appears.
const GuestAgentChannel = "org.qemu.guest_agent.0"

// DefaultBinary is the QEMU system emulator started when Config.Binary is
// empty.
const DefaultBinary = "qemu-system-x86_64"

// Config describes one QEMU process.
type Config struct {
	Name string
	CPUs int
	// MemoryKiB is passed verbatim as -m <n>K. See SafeMemoryKiB.
	MemoryKiB int64
	// Disks are attached as virtio-blk devices; the first one boots.
	Disks []Disk
	// RunDir holds the sockets, pid file and logs (created if missing).
	RunDir string
	// Incoming starts QEMU with -incoming defer, waiting for
	// PrepareIncoming.
	Incoming bool
	// NICs are attached as virtio-net devices, in order.
	NICs []NIC
	// HotplugDisks are disks the VM starts with as if they had been hot-plugged (a
	// migration target of a VM with hot-plugged disks, a restart that keeps them): after
	// every other device, each at its slot, removable with DetachDisk (hotplug.go).
	HotplugDisks []HotplugDisk
	// Extra arguments appended to the command line.
	Extra []string
	// CPU is the guest's processor (zero: QEMU's default).
	CPU CPU
	// Machine is the guest's hardware and firmware (osType, bootloader, paravirtualization).
	Machine Machine

	// Accel is "kvm", "tcg" or "" (auto: $FERRY_QEMU_ACCEL if set, else
	// kvm when KVMUsable, else tcg).
	Accel string
	// Binary overrides DefaultBinary.
	Binary string
}

// Disk is one disk image. Format is "raw", "qcow2", ... or "" to sniff
// (qcow2 by magic, raw otherwise).
type Disk struct {
	Path     string
	Format   string
	ReadOnly bool
	// CDROM attaches the image as a read-only IDE CD-ROM (an installer ISO, a cloud-init
	// seed) instead of a virtio disk: guests look for such media on a CD drive, and every
	// guest, Windows setup included, has the driver for one.
	CDROM bool
	// BootIndex is the disk's place in the boot order (a smaller one boots first). When no
	// disk has one the disks boot in list order; when some have, only those are offered.
	BootIndex int
}

// NIC is a virtio network card on an open tap device (package vmnet). QEMU gets the
// descriptor; the caller may close its own copy once Start returned.
type NIC struct {
	Tap *os.File
	MAC string // e.g. 02:66:0a:42:0a:05
}

// SafeMemoryKiB returns kib, lowered by 8 KiB when it is a multiple of
// 256 KiB. Debian 12's QEMU 7.2 under TCG has a dirty-bitmap bug that loses
// guest pages during live migration when the RAM size is a multiple of
// 256 KiB; an odd size (e.g. 131064K instead of 128M) avoids it. The guest
// sees 8 KiB less RAM, which is irrelevant.
func SafeMemoryKiB(kib int64) int64 {
	if kib > 8 && kib%256 == 0 {
		return kib - 8
	}
	return kib
}

// Instance is a running QEMU process.
type Instance struct {
	cfg   Config
	cmd   *exec.Cmd
	qmp   *QMPClient
	accel string
	done  chan struct{}
	errs  *tailBuffer

	mu            sync.Mutex
	requested     bool // Shutdown/Kill asked for through this Instance
	powerdown     bool // system_powerdown sent
	guestShutdown bool // SHUTDOWN event with guest=true
	hostShutdown  string
	fault         *Fault // the guest panicked or QEMU stopped it on an I/O error
	waitErr       error
	exitState     *os.ProcessState
}

// Start launches QEMU and returns once its QMP monitor answered. ctx bounds
// the startup only; the process lives until it exits or is stopped.
func Start(ctx context.Context, cfg Config) (*Instance, error) {
	if cfg.RunDir == "" {
		return nil, errors.New("hypervisor: RunDir is required")
	}
	if len(cfg.Disks) == 0 {
		return nil, errors.New("hypervisor: at least one disk is required")
	}
	if cfg.CPUs <= 0 {
		cfg.CPUs = 1
	}
	if cfg.MemoryKiB <= 0 {
		cfg.MemoryKiB = SafeMemoryKiB(128 * 1024)
	}
	if cfg.Binary == "" {
		cfg.Binary = DefaultBinary
	}
	bin, err := exec.LookPath(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("hypervisor: %s not found (install qemu-system-x86): %w", cfg.Binary, err)
	}
	boot := bootDisk(cfg.Disks)
	for i := range cfg.Disks {
		if err := checkDisk(&cfg.Disks[i], i == boot); err != nil {
			return nil, err
		}
	}
	if err := cfg.Machine.prepareFirmware(cfg.Incoming); err != nil {
		return nil, fmt.Errorf("hypervisor: %w", err)
	}
	if err := checkHotplugDisks(cfg.HotplugDisks); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.RunDir, 0o750); err != nil {
		return nil, fmt.Errorf("hypervisor: %w", err)
	}
	for _, n := range []string{QMPSocketName, SerialSocketName, PIDFileName, GuestAgentSocketName, VNCSocketName} {
		os.Remove(filepath.Join(cfg.RunDir, n))
	}
	logPath := filepath.Join(cfg.RunDir, SerialLogName)
	if _, err := os.Stat(logPath); err == nil {
		os.Rename(logPath, logPath+".prev")
	}

	accel := ResolveAccel(cfg.Accel)

	inst := &Instance{cfg: cfg, accel: accel, done: make(chan struct{}), errs: &tailBuffer{max: 8 << 10}}
	cmd := exec.Command(bin, buildArgs(cfg, accel)...)
	qlog, err := os.OpenFile(filepath.Join(cfg.RunDir, QEMULogName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("hypervisor: %w", err)
	}
	cmd.Stdout = qlog
	cmd.Stderr = &teeWriter{a: qlog, b: inst.errs}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// QEMU must never outlive its launcher. (Pdeathsig fires when the
		// forking OS thread exits; Go only retires threads whose goroutine
		// exited while locked, which this package never does.)
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true, // terminal signals go to the launcher only
	}
	for _, n := range cfg.NICs {
		cmd.ExtraFiles = append(cmd.ExtraFiles, n.Tap)
	}
	inst.cmd = cmd
	if err := cmd.Start(); err != nil {
		qlog.Close()
		return nil, fmt.Errorf("hypervisor: start %s: %w", bin, err)
	}
	go func() {
		err := cmd.Wait()
		qlog.Close()
		inst.mu.Lock()
		inst.waitErr = err
		inst.exitState = cmd.ProcessState
		inst.mu.Unlock()
		close(inst.done)
	}()

	if err := inst.connectQMP(ctx); err != nil {
		inst.Kill()
		<-inst.done
		if msg := inst.errs.String(); msg != "" {
			return nil, fmt.Errorf("hypervisor: qemu failed to start: %s", msg)
		}
		return nil, fmt.Errorf("hypervisor: qemu failed to start: %w", err)
	}
	return inst, nil
}

func (inst *Instance) connectQMP(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
	}
	sock := filepath.Join(inst.cfg.RunDir, QMPSocketName)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-inst.done:
			return errors.New("qemu exited during startup")
		default:
		}
		if _, err := os.Stat(sock); err == nil {
			c, err := DialQMP(ctx, sock, inst.onEvent)
			if err == nil {
				inst.qmp = c
				return nil
			}
			if ctx.Err() != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-inst.done:
			return errors.New("qemu exited during startup")
		case <-tick.C:
		}
	}
}

func (inst *Instance) onEvent(ev Event) {
	if f := faultOf(ev); f != nil {
		inst.mu.Lock()
		inst.fault = f
		inst.mu.Unlock()
		return
	}
	if ev.Name == "RESUME" {
		// A guest that runs again (cont after an I/O error was fixed) no longer shows the
		// fault; a panicked guest is never resumed by Ferry.
		inst.mu.Lock()
		if inst.fault != nil && inst.fault.Reason == FaultIOError {
			inst.fault = nil
		}
		inst.mu.Unlock()
		return
	}
	if ev.Name != "SHUTDOWN" {
		return
	}
	var d struct {
		Guest  bool   `json:"guest"`
		Reason string `json:"reason"`
	}
	json.Unmarshal(ev.Data, &d)
	inst.mu.Lock()
	if d.Guest {
		inst.guestShutdown = true
	} else {
		inst.hostShutdown = d.Reason
	}
	inst.mu.Unlock()
}

// TCGCacheMiB caps the translation cache of TCG (QEMU without KVM). QEMU's default, 1 GiB
// on a 64-bit host, fills as the guest runs new code: a 512 MiB Debian guest's QEMU (7.2)
// reached 1 GiB RSS by the end of its boot, twice the guest, more than a launcher pod's
// memory limit (the guest and an overhead) holds. With 128 MiB the same boot took as long
// (41 s against 40 s to cloud-init's end) and QEMU kept within the guest's memory, the
// cache and ~50 MiB.
const TCGCacheMiB = 128

// accelArg is -accel's value for accel: TCG with its cache capped (TCGCacheMiB).
func accelArg(accel string) string {
	if accel == "tcg" {
		return "tcg,tb-size=" + strconv.Itoa(TCGCacheMiB)
	}
	return accel
}

func buildArgs(cfg Config, accel string) []string {
	run := cfg.RunDir
	name := cfg.Name
	if name == "" {
		name = "ferry"
	}
	args := []string{
		"-name", "guest=" + qemuEscape(name),
	}
	args = append(args, cfg.Machine.machineArgs()...)
	args = append(args,
		"-accel", accelArg(accel),
		"-nodefaults", "-no-user-config",
		// QEMU's own seccomp filter, on top of the container's: a guest that escapes into
		// QEMU cannot run programs, gain privileges (setuid and the like), change its
		// scheduling or resource limits, nor use the system calls QEMU itself no longer
		// needs. It is set before the guest runs a single instruction.
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-display", "none", "-vga", "std", "-vnc", "unix:"+qemuEscape(filepath.Join(run, VNCSocketName)),
		"-smp", strconv.Itoa(cfg.CPUs),
		"-m", strconv.FormatInt(cfg.MemoryKiB, 10)+"K",
		"-pidfile", filepath.Join(run, PIDFileName),
		"-chardev", "socket,id=qmp,server=on,wait=off,path="+qemuEscape(filepath.Join(run, QMPSocketName)),
		"-mon", "chardev=qmp,mode=control",
		// logfile works with socket chardevs: output is logged whether or
		// not a console client is attached.
		"-chardev", "socket,id=serial0,server=on,wait=off,logappend=on,path="+
			qemuEscape(filepath.Join(run, SerialSocketName))+
			",logfile="+qemuEscape(filepath.Join(run, SerialLogName)),
		"-serial", "chardev:serial0",
		// A guest kernel that panics tells QEMU (Linux loads its pvpanic driver by itself);
		// QEMU then keeps the guest paused, as evidence, for the runPolicy to decide.
		"-device", "pvpanic",
		"-action", "panic=pause",
		// The QEMU guest agent's channel. QEMU accepts the connection whether or not an
		// agent runs in the guest (package guestagent copes).
		"-device", "virtio-serial-pci,id=vser0",
		"-chardev", "socket,id=qga0,server=on,wait=off,path="+qemuEscape(filepath.Join(run, GuestAgentSocketName)),
		"-device", "virtserialport,bus=vser0.0,nr=1,chardev=qga0,id=channel0,name="+GuestAgentChannel,
	)
	args = append(args, cfg.Machine.osArgs(accel)...)
	args = append(args, cfg.Machine.diskArgs(cfg.Disks, bootIndexes(cfg.Disks))...)
	for i, n := range cfg.NICs {
		// ExtraFiles start at descriptor 3. romfile= skips the PXE ROM: nothing boots
		// from the network, and the ROM need not be installed.
		args = append(args, "-netdev", fmt.Sprintf("tap,id=net%d,fd=%d", i, 3+i),
			"-device", fmt.Sprintf("%s,netdev=net%d,mac=%s,romfile=", cfg.Machine.nicModel(), i, n.MAC))
	}
	cpu, _ := cpuArg(cfg.CPU, accel)
	if cpu = cfg.Machine.cpuWithOS(cpu, accel); cpu != "" {
		args = append(args, "-cpu", cpu)
	}
	args = append(args, hotplugArgs(cfg.HotplugDisks)...)
	if cfg.Incoming {
		args = append(args, "-incoming", "defer")
	}
	return append(args, cfg.Extra...)
}

// qemuEscape doubles commas, QEMU's escape inside option values.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
