// Command pause is the pod sandbox's process: it holds the pod's namespaces, reaps the
// zombies it inherits as PID 1 of a shared PID namespace, and exits on SIGINT/SIGTERM.
// The rig builds it because the upstream pause image is C built by Docker; this does the
// same job and is built from source here with the rest of the tier.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
