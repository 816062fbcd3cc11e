package hypervisor

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/nocloud"
)

func TestBuildArgsCDROM(t *testing.T) {
	args := buildArgs(Config{RunDir: "/run/x", CPUs: 1, MemoryKiB: 131064, Disks: []Disk{
		{Path: "/s/disk.qcow2", Format: "qcow2"},
		{Path: "/s/seed,1.iso", Format: "raw", CDROM: true},
	}}, "tcg")
	var drives, devices []string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-drive":
			drives = append(drives, args[i+1])
		case "-device":
			if strings.Contains(args[i+1], "drive=") {
				devices = append(devices, args[i+1])
			}
		}
	}
	want := []string{
		"if=none,id=disk0,file=/s/disk.qcow2,format=qcow2,file.locking=on,cache=writeback,werror=stop,rerror=stop",
		"if=none,id=disk1,file=/s/seed,,1.iso,format=raw,file.locking=on,cache=writeback,media=cdrom,readonly=on",
	}
	if !slices.Equal(drives, want) {
		t.Errorf("drives:\n%s\nwant:\n%s", strings.Join(drives, "\n"), strings.Join(want, "\n"))
	}
	want = []string{"virtio-blk-pci,drive=disk0,bootindex=1", "ide-cd,drive=disk1,bootindex=2"}
	if !slices.Equal(devices, want) {
		t.Errorf("devices %q, want %q", devices, want)
	}
}

// TestCDROMInQEMU starts a real QEMU with a seed image as a CD-ROM and asks QEMU what it
// attached: a removable, read-only drive with the image in it.
func TestCDROMInQEMU(t *testing.T) {
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		t.Fatalf("%s not found; %s", DefaultBinary, setupHint)
	}
	dir := t.TempDir()
	boot := filepath.Join(dir, "boot.img")
	b := make([]byte, 1<<20)
	b[510], b[511] = 0x55, 0xaa // a boot sector that boots nothing: QEMU only has to run
	if err := os.WriteFile(boot, b, 0o644); err != nil {
		t.Fatal(err)
	}
	seed := seedISO(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := Start(ctx, Config{Name: "cdrom", MemoryKiB: 131064, RunDir: filepath.Join(dir, "run"),
		Disks: []Disk{{Path: boot, Format: "raw"}, {Path: seed, Format: "raw", CDROM: true}}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer func() { inst.Kill(); inst.Wait() }()
	checkSeedDrive(ctx, t, inst, seed)
}

func seedISO(t *testing.T, dir string) string {
	t.Helper()
	seed := filepath.Join(dir, "seed.iso")
	files, err := nocloud.Seed{InstanceID: "i-1", Hostname: "vm"}.Files()
	if err != nil {
		t.Fatal(err)
	}
	if err := nocloud.WriteISO(seed, nocloud.LabelNoCloud, files); err != nil {
		t.Fatal(err)
	}
	return seed
}

// checkSeedDrive asks QEMU for its drives: the seed must be one, removable and read-only.
func checkSeedDrive(ctx context.Context, t *testing.T, inst *Instance, seed string) {
	t.Helper()
	var blocks []struct {
		Device    string `json:"device"`
		Removable bool   `json:"removable"`
		Inserted  *struct {
			File string `json:"file"`
			RO   bool   `json:"ro"`
		} `json:"inserted"`
	}
	if err := inst.QMP().Execute(ctx, "query-block", nil, &blocks); err != nil {
		t.Fatalf("query-block: %v", err)
	}
	t.Logf("query-block: %+v", blocks)
	var found bool
	for _, blk := range blocks {
		if blk.Inserted == nil || blk.Inserted.File != seed {
			continue
		}
		found = true
		if blk.Device != "disk1" || !blk.Removable || !blk.Inserted.RO {
			t.Errorf("seed drive %s: removable %v, read-only %v; want disk1, removable, read-only", blk.Device, blk.Removable, blk.Inserted.RO)
		}
	}
	if !found {
		t.Fatalf("QEMU lists no drive with %s", seed)
	}
}

// TestMigrationWithCDROM: a guest with a seed CD-ROM migrates to a QEMU that opens the same
// image file, and keeps running there with the CD-ROM in its drive.
func TestMigrationWithCDROM(t *testing.T) {
	disk := overlay(t, guestImage(t))
	dir := t.TempDir()
	seed := seedISO(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg := func(name string, incoming bool) Config {
		return Config{Name: name, MemoryKiB: SafeMemoryKiB(128 * 1024), RunDir: filepath.Join(dir, name), Incoming: incoming,
			Disks: []Disk{{Path: disk, Format: "qcow2"}, {Path: seed, Format: "raw", CDROM: true}}}
	}
	src, err := Start(ctx, cfg("src", false))
	if err != nil {
		t.Fatalf("Start source: %v", err)
	}
	defer func() { src.Kill(); src.Wait() }()
	srcF := NewSerialFollower(filepath.Join(dir, "src", SerialLogName))
	waitFor(t, 2*time.Minute, "CNT 1 on source", func() bool {
		srcF.Poll()
		_, _, ok := srcF.Heartbeat()
		return ok
	})

	dst, err := Start(ctx, cfg("dst", true))
	if err != nil {
		t.Fatalf("Start destination: %v", err)
	}
	defer func() { dst.Kill(); dst.Wait() }()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	uri := "tcp:127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	if err := dst.PrepareIncoming(ctx, uri, nil); err != nil {
		t.Fatalf("PrepareIncoming: %v", err)
	}
	if err := src.MigrateOut(ctx, uri, MigrationParams{MaxBandwidth: 1 << 30, DowntimeLimit: 300 * time.Millisecond}); err != nil {
		t.Fatalf("MigrateOut: %v", err)
	}
	mctx, mcancel := context.WithTimeout(ctx, 90*time.Second)
	info, err := src.WaitMigration(mctx, 20*time.Millisecond)
	mcancel()
	if err != nil {
		t.Fatalf("migration: %v (%+v)", err, info)
	}
	srcF.Poll()
	last, _, _ := srcF.Heartbeat()
	dstF := NewSerialFollower(filepath.Join(dir, "dst", SerialLogName))
	waitFor(t, time.Minute, "destination CNT > last source CNT", func() bool {
		dstF.Poll()
		n, _, ok := dstF.Heartbeat()
		return ok && n > last
	})
	checkSeedDrive(ctx, t, dst, seed)
}
