package watchdog

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Device is the Linux watchdog device of a real node, such as /dev/watchdog of the
// softdog module or of a hardware timer. The kernel resets the machine when the device
// is armed and not fed in time, even after this process died.
type Device struct {
	path string
	sys  deviceSys

	mu    sync.Mutex
	fd    int
	armed bool
}

// deviceSys is the system calls Device makes; tests replace them, because arming a real
// watchdog device would reset the machine the tests run on.
type deviceSys struct {
	open       func(path string) (fd int, err error)
	setTimeout func(fd, seconds int) error
	keepalive  func(fd int) error
	write      func(fd int, p []byte) (int, error)
	close      func(fd int) error
}

var linuxSys = deviceSys{
	// O_CLOEXEC: a child that inherited the descriptor would keep the device open after
	// a magic close, and the kernel counts on.
	open: func(path string) (int, error) { return unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0) },
	setTimeout: func(fd, seconds int) error {
		return unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, seconds)
	},
	keepalive: unix.IoctlWatchdogKeepalive,
	write:     unix.Write,
	close:     unix.Close,
}

// magicClose is the byte that, written before close, stops the timer (unless the driver
// was loaded with nowayout).
var magicClose = []byte{'V'}

// NewDevice returns the watchdog device at path (usually /dev/watchdog). Nothing is
// opened before Arm.
func NewDevice(path string) *Device {
	return &Device{path: path, sys: linuxSys, fd: -1}
}

// Arm opens the device, which starts the kernel's timer, sets its timeout (whole
// seconds, rounded up) and feeds it once. On an armed device it only sets the new
// timeout and feeds.
func (d *Device) Arm(timeout time.Duration) error {
	if err := checkTimeout(timeout); err != nil {
		return err
	}
	seconds := int((timeout + time.Second - 1) / time.Second)
	d.mu.Lock()
	defer d.mu.Unlock()
	opened := false
	if !d.armed {
		fd, err := d.sys.open(d.path)
		if err != nil {
			return fmt.Errorf("open watchdog %s: %w", d.path, err)
		}
		d.fd, d.armed, opened = fd, true, true
	}
	err := d.sys.setTimeout(d.fd, seconds)
	if err != nil {
		err = fmt.Errorf("set timeout of watchdog %s to %ds: %w", d.path, seconds, err)
	} else if err = d.sys.keepalive(d.fd); err != nil {
		err = fmt.Errorf("feed watchdog %s: %w", d.path, err)
	}
	if err != nil && opened {
		// The caller learns that arming failed and will not feed: stop the timer that
		// opening started rather than let the driver's default timeout reset the node.
		return errors.Join(err, d.disarmLocked())
	}
	return err
}

// Feed restarts the kernel's countdown.
func (d *Device) Feed() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.armed {
		return ErrNotArmed
	}
	if err := d.sys.keepalive(d.fd); err != nil {
		return fmt.Errorf("feed watchdog %s: %w", d.path, err)
	}
	return nil
}

// Disarm stops the timer with the magic close. A driver loaded with nowayout ignores it
// and resets the node when the timeout passes anyway.
func (d *Device) Disarm() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.armed {
		return nil
	}
	return d.disarmLocked()
}

func (d *Device) disarmLocked() error {
	_, werr := d.sys.write(d.fd, magicClose)
	if werr != nil {
		werr = fmt.Errorf("stop watchdog %s: %w", d.path, werr)
	}
	return errors.Join(werr, d.closeLocked())
}

// Close closes the device without the magic byte: the kernel keeps counting and resets
// the node unless someone opens the device again and feeds it.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.armed {
		return nil
	}
	return d.closeLocked()
}

func (d *Device) closeLocked() error {
	fd := d.fd
	d.fd, d.armed = -1, false
	if err := d.sys.close(fd); err != nil {
		return fmt.Errorf("close watchdog %s: %w", d.path, err)
	}
	return nil
}
