// Command itmanager-agent runs on a managed device. Every interval it gathers
// facts (OS version, hostname, addresses, disk encryption where it can tell)
// and checks in with the itmanager check-in service using the device's token.
// It never holds Kubernetes credentials.
//
// Its enrolment is a directory with the files url, token and ca.crt: the
// keys of the enrolment Secret <device>-agent, as a Secret volume mounts them
// or as an installer writes them.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/itmanager-io/itmanager/internal/agent"
	"github.com/itmanager-io/itmanager/internal/version"
)

func main() {
	var (
		enrolmentDir   = flag.String("enrolment-dir", "/etc/itmanager-agent", "Directory with the enrolment files url, token and ca.crt.")
		stateFile      = flag.String("state-file", "/var/lib/itmanager-agent/sequence", "File that keeps the check-in sequence across restarts.")
		interval       = flag.Duration("interval", time.Minute, "Check-in interval until the server asks for another.")
		maxBackoff     = flag.Duration("max-backoff", 5*time.Minute, "Longest wait between retries after failures.")
		upgradeCommand = flag.String("upgrade-command", "", "Shell command that upgrades the device to $ITMANAGER_TARGET_VERSION when a maintenance window authorizes it.")
		upgradeTimeout = flag.Duration("upgrade-timeout", time.Hour, "Longest the upgrade command may run before it is killed and the upgrade reported failed.")
		once           = flag.Bool("once", false, "Check in once and exit (non-zero on failure); a refusal that says how to succeed (Retry-After up to a minute, a sequence out of step) is retried once.")
		root           = flag.String("root", "/", "Root of the filesystem facts are read from.")
		logLevel       = flag.String("log-level", "info", "debug, info, warn or error.")
		logJSON        = flag.Bool("log-json", false, "Log JSON instead of text.")
		showVersion    = flag.Bool("version", false, "Print the version and commit, and exit.")
	)
	flag.Parse()
	if *showVersion {
		version.Print(os.Stdout, "itmanager-agent")
		return
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "itmanager-agent: --log-level: %v\n", err)
		os.Exit(2)
	}
	opts := &slog.HandlerOptions{Level: level}
	var handler slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if *logJSON {
		handler = slog.NewJSONHandler(os.Stderr, opts)
	}
	log := slog.New(handler)

	a := &agent.Agent{
		EnrolmentDir: *enrolmentDir, StateFile: *stateFile, System: agent.System{Root: *root},
		Version: version.Version, Log: log, Interval: *interval, MaxBackoff: *maxBackoff,
	}
	if *upgradeCommand != "" {
		a.Upgrader = agent.CommandUpgrader{Command: *upgradeCommand, Timeout: *upgradeTimeout}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *once {
		resp, err := a.CheckInOnce(ctx, time.Minute)
		if err != nil {
			log.Error("Check-in failed", "error", err)
			os.Exit(1)
		}
		log.Info("Checked in", "nextCheckInSeconds", resp.NextCheckInSeconds, "upgrade", resp.Upgrade != nil)
		return
	}
	log.Info("Starting", "version", version.Version, "commit", version.Commit, "enrolment", *enrolmentDir, "interval", *interval)
	if err := a.Run(ctx); err != nil {
		log.Error("Agent stopped", "error", err)
		os.Exit(1)
	}
	log.Info("Stopped")
}
