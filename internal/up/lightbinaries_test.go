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
	for _, name := range []string{ControllerBinary, AgentBinary, WatchdogBinary, LauncherBinary} {
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

func TestIsAgent(t *testing.T) {
	for args, want := range map[string]bool{
		"/work/bin/ferry-agent --kubeconfig k --state-dir d": true,
		"ferry-agent --role=kubelet --state-dir d":           true,
		"/usr/local/bin/ferry agent --state-dir d":           true,
		"/work/bin/ferry-launcher --vm-name agent":           false,
		"/work/bin/ferry-watchdog --node n":                  false,
		"/work/bin/ferry up --nodes 3":                       false,
		"/work/bin/ferry":                                    false,
	} {
		if got := isAgent(strings.Fields(args)); got != want {
			t.Errorf("isAgent(%q) = %v, want %v", args, got, want)
		}
	}
}
