package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxOutput is how much of an upgrade command's output is kept: its end,
// where the error usually is.
const maxOutput = 512

// CommandUpgrader runs an installation-specific command to upgrade the
// device, with the target in $ITMANAGER_TARGET_VERSION. A non-zero exit, or
// running longer than Timeout, is a failed upgrade; the end of its output
// becomes the reported message.
type CommandUpgrader struct {
	Command string
	// Timeout bounds the command (zero: no bound but the context's).
	Timeout time.Duration
}

// Upgrade runs the command through /bin/sh.
func (u CommandUpgrader) Upgrade(ctx context.Context, target string) error {
	if u.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, u.Timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", u.Command) //nolint:gosec // the device owner configures it
	cmd.Env = append(os.Environ(), "ITMANAGER_TARGET_VERSION="+target)
	// The command runs in its own process group, killed as a whole at the
	// timeout (not only the shell); output is not waited for past that.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out := &tailBuffer{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s", u.Timeout)
	}
	if tail := out.String(); tail != "" {
		return fmt.Errorf("%w: %s", err, tail)
	}
	return err
}

// tailBuffer keeps only the last max bytes written to it, so a chatty
// upgrade cannot fill the agent's memory.
type tailBuffer struct {
	mu        sync.Mutex
	max       int
	buf       []byte
	truncated bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.truncated = true
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.buf))
	if t.truncated && s != "" {
		return "…" + s
	}
	return s
}
