package watchdog

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// fakeDeviceSys records the system calls of a Device instead of making them: opening a
// real watchdog device in a test would reset the machine.
type fakeDeviceSys struct {
	calls    []string
	openErr  error
	setErr   error
	writeErr error
	nextFD   int
	openFDs  map[int]bool
}

func newFakeDevice(t *testing.T) (*Device, *fakeDeviceSys) {
	f := &fakeDeviceSys{nextFD: 3, openFDs: map[int]bool{}}
	d := NewDevice("/nonexistent/watchdog")
	d.sys = deviceSys{
		open: func(path string) (int, error) {
			f.calls = append(f.calls, "open "+path)
			if f.openErr != nil {
				return -1, f.openErr
			}
			fd := f.nextFD
			f.nextFD++
			f.openFDs[fd] = true
			return fd, nil
		},
		setTimeout: func(fd, seconds int) error {
			f.check(t, fd)
			f.calls = append(f.calls, fmt.Sprintf("settimeout %d", seconds))
			return f.setErr
		},
		keepalive: func(fd int) error {
			f.check(t, fd)
			f.calls = append(f.calls, "keepalive")
			return nil
		},
		write: func(fd int, p []byte) (int, error) {
			f.check(t, fd)
			f.calls = append(f.calls, fmt.Sprintf("write %q", p))
			if f.writeErr != nil {
				return 0, f.writeErr
			}
			return len(p), nil
		},
		close: func(fd int) error {
			f.check(t, fd)
			delete(f.openFDs, fd)
			f.calls = append(f.calls, "close")
			return nil
		},
	}
	return d, f
}

func (f *fakeDeviceSys) check(t *testing.T, fd int) {
	t.Helper()
	if !f.openFDs[fd] {
		t.Errorf("system call on fd %d, which is not open", fd)
	}
}

// take returns the calls since the last take.
func (f *fakeDeviceSys) take() []string {
	c := f.calls
	f.calls = nil
	return c
}

func TestDeviceSequence(t *testing.T) {
	d, f := newFakeDevice(t)

	if err := d.Feed(); !errors.Is(err, ErrNotArmed) {
		t.Fatalf("Feed before Arm: %v, want ErrNotArmed", err)
	}
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"arm rounds up to seconds", func() error { return d.Arm(4200 * time.Millisecond) },
			[]string{"open /nonexistent/watchdog", "settimeout 5", "keepalive"}},
		{"feed", d.Feed, []string{"keepalive"}},
		{"re-arm keeps the device open", func() error { return d.Arm(10 * time.Second) },
			[]string{"settimeout 10", "keepalive"}},
		{"disarm is a magic close", d.Disarm, []string{`write "V"`, "close"}},
		{"disarm again does nothing", d.Disarm, nil},
		{"arm below a second sets one second", func() error { return d.Arm(time.Millisecond) },
			[]string{"open /nonexistent/watchdog", "settimeout 1", "keepalive"}},
		{"close leaves the timer running", d.Close, []string{"close"}},
		{"close again does nothing", d.Close, nil},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := f.take(); !slices.Equal(got, s.want) {
			t.Errorf("%s: calls %q, want %q", s.name, got, s.want)
		}
	}
	if err := d.Feed(); !errors.Is(err, ErrNotArmed) {
		t.Errorf("Feed after Close: %v, want ErrNotArmed", err)
	}
	if len(f.openFDs) != 0 {
		t.Errorf("fds left open: %v", f.openFDs)
	}
}

func TestDeviceArmFailures(t *testing.T) {
	t.Run("open", func(t *testing.T) {
		d, f := newFakeDevice(t)
		f.openErr = errors.New("no such device")
		if err := d.Arm(time.Second); err == nil {
			t.Fatal("Arm succeeded without a device")
		}
		if err := d.Feed(); !errors.Is(err, ErrNotArmed) {
			t.Errorf("Feed after a failed Arm: %v, want ErrNotArmed", err)
		}
	})
	t.Run("set timeout stops the timer opening started", func(t *testing.T) {
		d, f := newFakeDevice(t)
		f.setErr = errors.New("invalid argument")
		if err := d.Arm(time.Hour); err == nil {
			t.Fatal("Arm succeeded though the timeout was refused")
		}
		want := []string{"open /nonexistent/watchdog", "settimeout 3600", `write "V"`, "close"}
		if got := f.take(); !slices.Equal(got, want) {
			t.Errorf("calls %q, want %q", got, want)
		}
	})
	t.Run("non-positive timeout", func(t *testing.T) {
		d, f := newFakeDevice(t)
		if err := d.Arm(0); err == nil {
			t.Fatal("Arm(0) succeeded")
		}
		if got := f.take(); len(got) != 0 {
			t.Errorf("calls %q, want none", got)
		}
	})
	t.Run("failed magic write still closes", func(t *testing.T) {
		d, f := newFakeDevice(t)
		if err := d.Arm(time.Second); err != nil {
			t.Fatal(err)
		}
		f.take()
		f.writeErr = errors.New("broken")
		if err := d.Disarm(); err == nil {
			t.Fatal("Disarm hid the failed magic write")
		}
		if got, want := f.take(), []string{`write "V"`, "close"}; !slices.Equal(got, want) {
			t.Errorf("calls %q, want %q", got, want)
		}
	})
}
