// Command pause is the e2e cluster's sandbox ("pause") image: PID 1 of every
// Pod's sandbox, it does nothing but hold the Pod's namespaces, reap the
// children re-parented to it, and exit 0 on SIGTERM or SIGINT, as
// Kubernetes' own pause does.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: warning: not PID 1, so it reaps no orphans but its own")
	}
	s := wait(signals, reap)
	fmt.Fprintln(os.Stderr, "pause: shutting down on", s)
	os.Exit(0)
}

// wait reaps on each SIGCHLD until another signal (SIGTERM, SIGINT)
// arrives, and returns that one.
func wait(signals <-chan os.Signal, reap func()) os.Signal {
	for s := range signals {
		if s != syscall.SIGCHLD {
			return s
		}
		reap()
	}
	return nil
}

// reap collects every child that has exited, without blocking: one SIGCHLD
// may stand for several.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
