package up

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckLightBinaries(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "ferry")
	if err := checkLightBinaries(exe); err == nil || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("nothing beside ferry: %v", err)
	}
	for _, name := range []string{WatchdogBinary, LauncherBinary} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := checkLightBinaries(exe); err != nil {
		t.Fatal(err)
	}
	if got, want := lightBinary(exe, WatchdogBinary), filepath.Join(dir, "ferry-watchdog"); got != want {
		t.Errorf("watchdog %s, want %s", got, want)
	}
}
