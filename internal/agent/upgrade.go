package agent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// CommandUpgrader runs an installation-specific command to upgrade the
// device, with the target in $ITMANAGER_TARGET_VERSION. A non-zero exit is a
// failed upgrade; the end of its output becomes the reported message.
type CommandUpgrader struct {
	Command string
}

// Upgrade runs the command through /bin/sh.
func (u CommandUpgrader) Upgrade(ctx context.Context, target string) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", u.Command) //nolint:gosec // the device owner configures it
	cmd.Env = append(os.Environ(), "ITMANAGER_TARGET_VERSION="+target)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tail := strings.TrimSpace(out.String())
		if len(tail) > 512 {
			tail = "…" + tail[len(tail)-512:]
		}
		return fmt.Errorf("%w: %s", err, tail)
	}
	return nil
}
