package agent

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestCommandUpgrader(t *testing.T) {
	tests := map[string]struct {
		u       CommandUpgrader
		wantErr string // "" for success
	}{
		"success sees the target":        {u: CommandUpgrader{Command: `test "$ITMANAGER_TARGET_VERSION" = 2.0`}},
		"failure reports the output end": {u: CommandUpgrader{Command: `echo "disk full" >&2; exit 3`}, wantErr: "exit status 3: disk full"},
		"output is bounded to its end": {
			u:       CommandUpgrader{Command: `i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done; echo "the real error"; exit 1`},
			wantErr: "the real error",
		},
		"a hung command is killed at the timeout": {u: CommandUpgrader{Command: `sleep 30`, Timeout: 200 * time.Millisecond}, wantErr: "timed out after 200ms"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := tc.u.Upgrade(context.Background(), "2.0")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Upgrade = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Upgrade = %v, want %q", err, tc.wantErr)
			}
			if len(err.Error()) > maxOutput+64 {
				t.Fatalf("message of %d bytes is not bounded", len(err.Error()))
			}
			if time.Since(start) > 10*time.Second {
				t.Fatal("the timeout did not stop the command")
			}
		})
	}
}
