package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestRunRefusesLimitsAgentsCannotKeep: the agent jitters its interval by
// ±10%, so a minimum interval above 90% of it would refuse punctual agents.
func TestRunRefusesLimitsAgentsCannotKeep(t *testing.T) {
	for name, c := range map[string]config{
		"no minimum interval":                      {interval: time.Minute, minInterval: 0},
		"a minimum interval equal to the interval": {interval: 10 * time.Second, minInterval: 10 * time.Second},
		"a minimum interval above 90%":             {interval: 10 * time.Second, minInterval: 9500 * time.Millisecond},
	} {
		t.Run(name, func(t *testing.T) {
			err := run(context.Background(), c)
			if err == nil || !strings.Contains(err.Error(), "--checkin-min-interval must be positive and at most 90% of --agent-interval") {
				t.Fatalf("got %v", err)
			}
		})
	}
	c := config{interval: time.Minute, minInterval: 10 * time.Second, addressCIDRs: "10.0.0.0/8,nonsense"}
	if err := run(context.Background(), c); err == nil || !strings.Contains(err.Error(), "nonsense") {
		t.Fatalf("a bad --agent-address-cidrs: got %v", err)
	}
}
