package watchdog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ResetMarker is the file, in a node's state directory, that the node's watchdog process
// writes when it resets the node (under `ferry up`); the node's agent reads it when it
// comes back.
const ResetMarker = "watchdog-reset"

// killRounds bounds how often KillNode looks again for processes of the node: one that
// was being started while the others were killed shows up only in a later look.
const killRounds = 5

// KillNode resets a node of `ferry up`: it sends SIGKILL to every process whose command
// line names the node's directory dir, written as in those command lines (the agent's
// --state-dir, and the paths under <dir>/pods/ of its launchers and QEMUs). The pid self
// and its ancestors are spared, so the watchdog process and `ferry up` above it survive.
// It returns the pids it killed.
//
// dir matches only as a whole path: /x/nodes/node-1 matches "/x/nodes/node-1",
// "/x/nodes/node-1/pods/vm" and "--state-dir=/x/nodes/node-1", never /x/nodes/node-10
// nor /y/x/nodes/node-1.
func KillNode(dir string, self int) (killed []int, err error) {
	dir = filepath.Clean(dir)
	if dir == "." || dir == ".." || dir == string(filepath.Separator) {
		return nil, fmt.Errorf("refused to kill the processes of node directory %q: it is not a node's", dir)
	}
	spared, err := ancestors(self)
	if err != nil {
		return nil, err
	}
	spared[self] = true
	var errs []error
	for range killRounds {
		found, err := processesNaming(dir, spared)
		if err != nil {
			return killed, err
		}
		if len(found) == 0 {
			break
		}
		for _, pid := range found {
			// A process that is gone is killed enough; a pid killed once and found
			// again is a zombie its parent has not reaped yet.
			spared[pid] = true
			switch err := syscall.Kill(pid, syscall.SIGKILL); {
			case err == nil:
				killed = append(killed, pid)
			case errors.Is(err, syscall.ESRCH):
			default:
				errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
			}
		}
	}
	return killed, errors.Join(errs...)
}

// processesNaming lists the processes, other than those spared, whose command line
// names dir.
func processesNaming(dir string, spared map[int]bool) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || spared[pid] {
			continue
		}
		// Kernel threads have no command line, and a process may be gone by now.
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		cmdline := string(bytes.ReplaceAll(bytes.TrimRight(raw, "\x00"), []byte{0}, []byte{' '}))
		if namesDir(cmdline, dir) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// namesDir reports whether cmdline holds dir as a whole path: not preceded by a path
// character (so not the tail of a longer path) and not followed by a file name
// character (so not the head of a sibling such as node-10), though a '/' may follow.
func namesDir(cmdline, dir string) bool {
	for i := 0; ; {
		j := strings.Index(cmdline[i:], dir)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(dir)
		before := start == 0 || (!isNameByte(cmdline[start-1]) && cmdline[start-1] != '/')
		after := end == len(cmdline) || !isNameByte(cmdline[end])
		if before && after {
			return true
		}
		i = start + 1
	}
}

func isNameByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
		b == '.' || b == '_' || b == '-' || b == '+' || b == '~' || b >= 0x80
}

// ancestors returns the parent of pid, its parent and so on up to init.
func ancestors(pid int) (map[int]bool, error) {
	up := map[int]bool{}
	for pid > 1 {
		ppid, err := parentOf(pid)
		if err != nil {
			return nil, err
		}
		if ppid <= 0 || up[ppid] {
			break
		}
		up[ppid] = true
		pid = ppid
	}
	return up, nil
}

// parentOf reads the parent pid from /proc/<pid>/stat, whose second field (the command
// name, in parentheses) may itself hold spaces and parentheses.
func parentOf(pid int) (int, error) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	rest := stat[bytes.LastIndexByte(stat, ')')+1:]
	f := strings.Fields(string(rest))
	if len(f) < 2 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %q", pid, stat)
	}
	return strconv.Atoi(f[1])
}
