package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWaitReapsOnEachSIGCHLDUntilSIGTERMOrSIGINT(t *testing.T) {
	for _, stop := range []os.Signal{syscall.SIGTERM, syscall.SIGINT} {
		signals := make(chan os.Signal, 4)
		signals <- syscall.SIGCHLD
		signals <- syscall.SIGCHLD
		signals <- stop
		signals <- syscall.SIGCHLD // after the stop: never handled
		reaped := 0
		if got := wait(signals, func() { reaped++ }); got != stop {
			t.Errorf("stopped on %v, want %v", got, stop)
		}
		if reaped != 2 {
			t.Errorf("%v: reaped %d times, want 2 (once per SIGCHLD before it)", stop, reaped)
		}
	}
}

// TestReapCollectsAnExitedChild: a child that exited and was never waited
// for (a zombie) is gone after reap.
func TestReapCollectsAnExitedChild(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start `true`: %v", err)
	}
	pid := cmd.Process.Pid
	stat := "/proc/" + strconv.Itoa(pid) + "/stat"
	deadline := time.Now().Add(10 * time.Second)
	for !isZombie(stat) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d never became a zombie", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	reap()
	if _, err := os.Stat(stat); !os.IsNotExist(err) {
		t.Errorf("child %d is still there after reap (stat: %v)", pid, err)
	}
}

func isZombie(stat string) bool {
	data, err := os.ReadFile(stat)
	if err != nil {
		return false
	}
	// "pid (comm) state ...": the state follows the last ')'.
	rest := string(data[strings.LastIndexByte(string(data), ')')+1:])
	return strings.HasPrefix(strings.TrimSpace(rest), "Z")
}
