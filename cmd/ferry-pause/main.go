// Command ferry-pause is the first process of every pod sandbox on a real-kubelet node of
// `ferry up` (containerd's sandbox_image): it holds the pod's namespaces, reaps the
// orphans re-parented to it and exits on SIGTERM or SIGINT. It links nothing but the
// runtime, so each pod pays about a megabyte for it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
