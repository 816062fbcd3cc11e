package launcher

// Hot-plug against the hypervisor fake: the API's checks and the exclusion of hot-plug and
// migration. The real QEMU test is hotplug_test.go.

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// slowAttach is a fake whose attaches wait until released.
type slowAttach struct {
	*hypervisor.Fake
	release chan struct{}
}

func (s *slowAttach) AttachDisk(ctx context.Context, d hypervisor.HotplugDisk) error {
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Fake.AttachDisk(ctx, d)
}

func put(t *testing.T, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error
}

// TestHotplugAndMigrationExcludeEachOther: a migration is refused while a disk is being
// attached, and when its target was started with other disks; disks cannot change while a
// migration runs; the disks asked for are checked (root, slots, names, formats).
func TestHotplugAndMigrationExcludeEachOther(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "d.qcow2")
	if err := os.WriteFile(file, []byte("QFI\xfb"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &slowAttach{Fake: hypervisor.NewFake(hypervisor.Config{Name: "fake"}), release: make(chan struct{})}
	l := newLauncher(Options{VMName: "fake", RunDir: t.TempDir()}, f, f, &logger{})
	l.memoryKiB = 131064
	l.hp = newHotplug(root, nil, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.runHotplug(ctx)
	ts := httptest.NewServer(l.handler())
	defer ts.Close()
	srv := ts.URL

	for body, want := range map[string]string{
		`{"devices":[{"slot":31,"name":"d","path":"/etc/passwd","format":"raw"}]}`:                                                                  "not under the hot-plug root",
		`{"devices":[{"slot":3,"name":"d","path":"` + file + `","format":"qcow2"}]}`:                                                                "outside 16-31",
		`{"devices":[{"slot":31,"name":"D_1","path":"` + file + `","format":"qcow2"}]}`:                                                             "disk name",
		`{"devices":[{"slot":31,"name":"d","path":"` + file + `","format":"vmdk"}]}`:                                                                "not raw or qcow2",
		`{"devices":[{"slot":31,"name":"d","path":"` + root + `/../x","format":"raw"}]}`:                                                            "clean absolute path",
		`{"devices":[{"slot":31,"name":"d","path":"` + file + `","format":"qcow2"},{"slot":31,"name":"e","path":"` + file + `","format":"qcow2"}]}`: "named twice",
		`{"devices":[],"x":1}`: "unknown field",
	} {
		if code, msg := put(t, srv+"/blockdevices", body); code != http.StatusBadRequest || !strings.Contains(msg, want) {
			t.Errorf("%s: %d %q, want 400 %q", body, code, msg, want)
		}
	}
	if calls := f.Calls(); len(calls) != 0 {
		t.Fatalf("refused requests reached the VM: %v", calls)
	}

	// Attaching: a migration waits for it.
	if code, msg := put(t, srv+"/blockdevices", `{"devices":[{"slot":31,"name":"d","path":"`+file+`","format":"qcow2"}]}`); code != http.StatusAccepted {
		t.Fatalf("PUT: %d %s", code, msg)
	}
	waitUntil(t, 5*time.Second, "attaching", func() bool {
		st := l.status(context.Background())
		return len(st.BlockDevices) == 1 && st.BlockDevices[0].State == BlockAttaching
	})
	req := `{"uri":"tcp:127.0.0.1:4444","blockDevices":[{"slot":31,"path":"` + file + `"}]}`
	if code, msg := post(t, srv+"/migrate", req); code != http.StatusConflict || !strings.Contains(msg, "disk d is being attached") {
		t.Fatalf("migrate while attaching: %d %q", code, msg)
	}
	close(f.release)
	waitUntil(t, 5*time.Second, "attached", func() bool {
		st := l.status(context.Background())
		return len(st.BlockDevices) == 1 && st.BlockDevices[0].State == BlockAttached
	})
	// A target without the disk: refused, and nothing started.
	if code, msg := post(t, srv+"/migrate", `{"uri":"tcp:127.0.0.1:4444"}`); code != http.StatusConflict || !strings.Contains(msg, "hot-plugged disks none, but this VM has hotplug-1f="+file) {
		t.Fatalf("migrate to a target without the disk: %d %q", code, msg)
	}
	f.MigrateFunc = func(string, hypervisor.MigrationParams) error { return nil }
	f.SetMigration(hypervisor.MigrationInfo{Status: "active"})
	if code, msg := post(t, srv+"/migrate", req); code != http.StatusAccepted {
		t.Fatalf("migrate: %d %q", code, msg)
	}
	if code, msg := put(t, srv+"/blockdevices", `{"devices":[]}`); code != http.StatusConflict || !strings.Contains(msg, "a migration to tcp:127.0.0.1:4444 is running") {
		t.Fatalf("detach during the migration: %d %q", code, msg)
	}
	// The migration fails: the disk can go.
	f.SetMigration(hypervisor.MigrationInfo{Status: "failed", Error: "test"})
	waitUntil(t, 5*time.Second, "the migration failed", func() bool {
		st := l.status(context.Background())
		return st.Migration != nil && st.Migration.Finished()
	})
	if code, msg := put(t, srv+"/blockdevices", `{"devices":[]}`); code != http.StatusAccepted {
		t.Fatalf("detach after the migration: %d %q", code, msg)
	}
	waitUntil(t, 5*time.Second, "detached", func() bool { return len(l.status(context.Background()).BlockDevices) == 0 })
	if d := f.HotplugDisks(); len(d) != 0 {
		t.Errorf("the VM still has %v", d)
	}
}

// TestHotplugDiskArgs: the controller's --hotplug-disk values (package launcherpod) are read
// back by the launcher as written, paths with commas and colons included.
func TestHotplugDiskArgs(t *testing.T) {
	for _, d := range []v1alpha2.HotplugDevice{
		{Slot: 31, Name: "data", Path: "/storage/disks/ns/d-uid.qcow2", Format: "qcow2"},
		{Slot: 16, Name: "iso.image", Path: "/storage/images/a,b:c.img", Format: "raw", ReadOnly: true},
	} {
		got, err := parseHotplugDisk(launcherpod.HotplugDiskArg(d))
		want := BlockDevice{Slot: d.Slot, Name: d.Name, Path: d.Path, Format: d.Format, ReadOnly: d.ReadOnly}
		if err != nil || got != want {
			t.Errorf("%+v: read back %+v, %v", d, got, err)
		}
		if HotplugDiskArg(want) != launcherpod.HotplugDiskArg(d) {
			t.Errorf("%+v: the launcher writes %q, the controller %q", d, HotplugDiskArg(want), launcherpod.HotplugDiskArg(d))
		}
		args := launcherpod.WithHotplugDisks([]string{"launcher", "--vm", "x", "--hotplug-disk", "1,old,/x:raw"}, []v1alpha2.HotplugDevice{d})
		if back := launcherpod.HotplugDisksOf(args); len(back) != 1 || back[0] != d {
			t.Errorf("%+v: args %q read back as %+v", d, args, back)
		}
	}
}
