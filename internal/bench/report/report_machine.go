package report

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/ferryvm/ferry/internal/bench"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

// Machine is what a report says of the machine it ran on. A field that could not be read
// says so ("unknown: …").
type Machine struct {
	CPU    string // model name
	CPUs   int    // logical CPUs
	Memory string
	Kernel string
	QEMU   string // `qemu-system-x86_64 --version`, first line
	KVM    string // whether guests run under KVM, and why not
	Go     string // the Go version ferry-bench was built with
	Commit string // the work tree's commit, and whether it has uncommitted changes
}

// readMachine reads the machine from /proc, QEMU and git (read-only: no lock taken).
func readMachine(ctx context.Context) Machine {
	m := Machine{Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err != nil {
		m.CPU = unknownBecause(err)
	} else {
		m.CPU, m.CPUs = parseCPUInfo(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err != nil {
		m.Memory = unknownBecause(err)
	} else {
		m.Memory = parseMemTotal(string(b))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err != nil {
		m.Kernel = unknownBecause(err)
	} else {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if out, err := runShort(ctx, "qemu-system-x86_64", "--version"); err != nil {
		m.QEMU = unknownBecause(err)
	} else {
		m.QEMU = bench.FirstLine(strings.TrimSpace(out))
	}
	m.KVM = kvmState()
	m.Commit = gitCommit(ctx)
	return m
}

func unknownBecause(err error) string { return "unknown: " + err.Error() }

// runShort runs a command that answers at once and returns its output.
func runShort(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			err = fmt.Errorf("%w: %s", err, bench.FirstLine(strings.TrimSpace(string(ee.Stderr))))
		}
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// parseCPUInfo returns the first model name in /proc/cpuinfo and the number of processors.
func parseCPUInfo(s string) (model string, n int) {
	for _, l := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			n++
		case "model name":
			if model == "" {
				model = strings.TrimSpace(v)
			}
		}
	}
	if model == "" {
		model = "unknown: no model name in /proc/cpuinfo"
	}
	return model, n
}

// parseMemTotal returns MemTotal of /proc/meminfo in GiB.
func parseMemTotal(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if rest, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			if f := strings.Fields(rest); len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
				}
			}
		}
	}
	return "unknown: no MemTotal in /proc/meminfo"
}

// kvmState says whether QEMU guests get KVM here, as the launcher decides it.
func kvmState() string {
	if a := os.Getenv("FERRY_QEMU_ACCEL"); a != "" {
		return "FERRY_QEMU_ACCEL=" + a + " chooses the accelerator"
	}
	if hypervisor.KVMUsable() {
		return "yes: guests run under KVM"
	}
	if _, err := os.Stat("/dev/kvm"); err == nil {
		return "no (/dev/kvm exists, but the CPU advertises no vmx/svm): guests run under TCG, QEMU's emulator"
	}
	return "no (no /dev/kvm): guests run under TCG, QEMU's emulator"
}

// gitCommit is the commit of the work tree in the current directory and whether it has
// uncommitted changes to tracked files; --no-optional-locks keeps git status from
// refreshing the index.
func gitCommit(ctx context.Context) string {
	head, err := runShort(ctx, "git", "rev-parse", "HEAD")
	if err != nil {
		return unknownBecause(err)
	}
	head = strings.TrimSpace(head)
	status, err := runShort(ctx, "git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
	switch {
	case err != nil:
		return head + " (changes " + unknownBecause(err) + ")"
	case strings.TrimSpace(status) != "":
		return head + " with uncommitted changes"
	}
	return head
}
