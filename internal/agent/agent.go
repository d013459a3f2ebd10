package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/itmanager-io/itmanager/internal/checkin/wire"
	"github.com/itmanager-io/itmanager/internal/text"
)

// Upgrader is the seam for upgrade execution: given an authorized target
// version it upgrades the device and returns when done. MaintenanceWindows
// authorize; how a device upgrades is the installation's business.
type Upgrader interface {
	Upgrade(ctx context.Context, targetVersion string) error
}

// Agent checks in periodically. Its enrolment (url, token, ca.crt) is read
// from EnrolmentDir before every check-in, so a rotated token or CA placed
// there is picked up without a restart.
type Agent struct {
	EnrolmentDir string
	// StateFile keeps the last check-in sequence across restarts.
	StateFile string
	System    System
	Version   string
	// Upgrader runs authorized upgrades; nil only logs them.
	Upgrader Upgrader
	Log      *slog.Logger
	// Interval is used until the server says otherwise.
	Interval time.Duration
	// MaxBackoff caps the wait after failures.
	MaxBackoff time.Duration
	// FactPoll is how often facts are re-gathered between check-ins; when
	// they differ from those last reported, the agent checks in as soon as
	// the service allows instead of waiting for the interval. 0 disables.
	FactPoll time.Duration

	interval     time.Duration // asked for by the service
	failures     int           // in a row
	serviceMin   time.Duration // the service's minimum interval, when it says it
	learnedMin   time.Duration // a floor a 429 taught, when it does not
	lastAccepted time.Time     // when the last accepted check-in was answered

	seq      uint64
	upgrade  *wire.UpgradeReport // a report still to deliver
	upgraded string              // target already run (or skipped) in this run
}

type enrolment struct {
	url, token string
	client     *http.Client
}

func (a *Agent) loadEnrolment() (*enrolment, error) {
	read := func(key string) ([]byte, error) {
		return os.ReadFile(filepath.Join(a.EnrolmentDir, key))
	}
	u, err := read(wire.SecretKeyURL)
	if err != nil {
		return nil, err
	}
	tok, err := read(wire.SecretKeyToken)
	if err != nil {
		return nil, err
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca, err := read(wire.SecretKeyCA); err == nil && len(bytes.TrimSpace(ca)) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("%s: no PEM certificate", filepath.Join(a.EnrolmentDir, wire.SecretKeyCA))
		}
		tlsConfig.RootCAs = pool
	}
	return &enrolment{
		url:    strings.TrimSpace(string(u)),
		token:  strings.TrimSpace(string(tok)),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig, Proxy: http.ProxyFromEnvironment}},
	}, nil
}

// nextSequence is one above the last one used (kept in StateFile across
// restarts). The service accepts a sequence at most one per minimum interval
// ahead of the last it accepted, plus one, so the agent counts; when its
// state is lost or behind (a re-enrolment, or someone else used the token),
// the service's 409 tells the last accepted sequence and the agent
// continues from it (see resync).
func (a *Agent) nextSequence() uint64 {
	if a.seq == 0 && a.StateFile != "" {
		if data, err := os.ReadFile(a.StateFile); err == nil {
			a.seq, _ = strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
		}
	}
	a.seq++
	a.saveSequence()
	return a.seq
}

func (a *Agent) saveSequence() {
	if a.StateFile != "" {
		if err := writeFileAtomic(a.StateFile, []byte(strconv.FormatUint(a.seq, 10))); err != nil {
			a.Log.Warn("Cannot persist the check-in sequence", "file", a.StateFile, "error", err)
		}
	}
}

// resync continues from the service's last accepted sequence after a 409
// that refused ours; it reports whether it did.
func (a *Agent) resync(err error) bool {
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusConflict || se.LastSequence == nil {
		return false
	}
	a.Log.Warn("The check-in service refused the sequence; continuing from its last accepted one (the state file was lost or is behind, or another holder of this token checked in)",
		"sent", a.seq, "lastAccepted", *se.LastSequence, "reason", se.Message)
	a.seq = *se.LastSequence
	a.saveSequence()
	return true
}

func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// StatusError is a refusal by the check-in service.
type StatusError struct {
	Code    int
	Message string
	// RetryAfter is the service's Retry-After (429, 503), 0 when absent.
	RetryAfter time.Duration
	// LastSequence is the service's last accepted sequence (409).
	LastSequence *uint64
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("check-in refused (%d): %s", e.Code, e.Message)
}

// CheckIn gathers facts and reports them once.
func (a *Agent) CheckIn(ctx context.Context) (*wire.Response, error) {
	return a.send(ctx, a.System.Gather(a.Version))
}

// send reports facts once.
func (a *Agent) send(ctx context.Context, facts wire.Facts) (*wire.Response, error) {
	enr, err := a.loadEnrolment()
	if err != nil {
		return nil, fmt.Errorf("read enrolment from %s: %w", a.EnrolmentDir, err)
	}
	req := wire.Request{Sequence: a.nextSequence(), Facts: facts, Upgrade: a.upgrade}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, enr.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	httpReq.Header.Set("Content-Type", "application/json")
	httpReq.Header.Set("Authorization", "Bearer "+enr.token)
	httpReq.Header.Set("User-Agent", "itmanager-agent/"+a.Version)
	resp, err := enr.client.Do(httpReq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e wire.Error
		_ = json.Unmarshal(data, &e)
		se := &StatusError{Code: resp.StatusCode, Message: e.Error, LastSequence: e.LastSequence}
		if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n > 0 {
			se.RetryAfter = time.Duration(min(n, 3600)) * time.Second
		}
		return nil, se
	}
	out := &wire.Response{}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("malformed answer: %w", err)
	}
	a.upgrade = nil // delivered
	return out, nil
}

// Run checks in until ctx ends: every interval the server asks for (jittered
// by ±10% so a fleet restarted together spreads out), after failures with
// exponential backoff and full jitter up to MaxBackoff, and, with FactPoll,
// as soon as the service allows when the facts changed (see NextCheckIn).
func (a *Agent) Run(ctx context.Context) error {
	a.interval = a.Interval
	var reported *wire.Facts
	for {
		facts := a.System.Gather(a.Version)
		resp, err := a.send(ctx, facts)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			reported = &facts
		}
		last := a.answered(ctx, resp, err)
		if !a.waitForNext(ctx, reported, last) {
			return nil
		}
	}
}

// waitForNext waits until NextCheckIn says, re-gathering facts every
// FactPoll meanwhile; false when ctx ended.
func (a *Agent) waitForNext(ctx context.Context, reported *wire.Facts, last LastAnswer) bool {
	poll := a.FactPoll > 0 && reported != nil
	for {
		var current wire.Facts
		if poll {
			current = a.System.Gather(a.Version)
		} else if reported != nil {
			current = *reported
		}
		now := time.Now()
		at, reason := NextCheckIn(now, reported, current, last)
		wait := at.Sub(now)
		if wait <= 0 {
			a.Log.Debug("Checking in", "reason", reason)
			return true
		}
		if poll {
			wait = min(wait, a.FactPoll)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// answered learns from one check-in's outcome (logging it, moving an
// authorized upgrade along) when the next is due and how long the service
// wants none.
func (a *Agent) answered(ctx context.Context, resp *wire.Response, err error) LastAnswer {
	if err == nil {
		if a.failures > 0 {
			a.Log.Info("Check-in succeeded again", "after", a.failures)
		}
		a.failures = 0
		if resp.NextCheckInSeconds > 0 {
			a.interval = time.Duration(resp.NextCheckInSeconds) * time.Second
		}
		if resp.MinIntervalMilliseconds > 0 {
			a.serviceMin = time.Duration(resp.MinIntervalMilliseconds) * time.Millisecond
		}
		for _, w := range resp.Warnings {
			a.Log.Warn("Check-in service", "warning", w)
		}
		a.Log.Debug("Checked in", "next", a.interval)
		a.handleUpgrade(ctx, resp.Upgrade)
		// Timed after the upgrade, which may take long: the service's
		// minimum runs from its answer, so from now is never too soon.
		a.lastAccepted = time.Now()
		hold := a.minInterval()
		wait := jitter(a.interval, 0.1)
		if a.upgrade != nil {
			wait = time.Second // report progress promptly
		}
		return LastAnswer{At: a.lastAccepted, Wait: max(wait, hold), Hold: hold}
	}
	now := time.Now()
	// Since the last accepted check-in the service's minimum still holds.
	held := time.Duration(0)
	if !a.lastAccepted.IsZero() {
		held = max(a.lastAccepted.Add(a.minInterval()).Sub(now), 0)
	}
	switch {
	case a.resync(err):
		wait := max(time.Second, held)
		return LastAnswer{At: now, Wait: wait, Hold: wait}
	case retryAfter(err) > 0:
		// Checking in too often, or the service is busy: wait as asked
		// (and a little more, so agents told together spread out); a fact
		// change may check in once the Retry-After has passed.
		ra := retryAfter(err)
		if se := (*StatusError)(nil); errors.As(err, &se) && se.Code == http.StatusTooManyRequests &&
			a.serviceMin == 0 && !a.lastAccepted.IsZero() {
			// The service did not say its minimum: this 429 bounds it.
			a.learnedMin = max(a.learnedMin, min(now.Sub(a.lastAccepted)+ra, a.interval))
		}
		wait := jitterUp(ra, 0.1)
		a.Log.Debug("Check-in deferred", "error", err, "retryIn", wait.Round(time.Second))
		return LastAnswer{At: now, Wait: wait, Hold: ra}
	default:
		a.failures++
		wait := max(backoff(a.failures, a.MaxBackoff), held)
		var se *StatusError
		if errors.As(err, &se) && se.Code == http.StatusUnauthorized {
			a.Log.Error("Token rejected: the agent was disabled or re-enrolled; install the current enrolment Secret", "dir", a.EnrolmentDir, "retryIn", wait.Round(time.Second))
		} else {
			a.Log.Warn("Check-in failed", "error", err, "attempt", a.failures, "retryIn", wait.Round(time.Second))
		}
		return LastAnswer{At: now, Wait: wait, Hold: wait}
	}
}

// handleUpgrade moves an authorized upgrade along. On Authorized it queues
// an InProgress report for the next (prompt) check-in; only once the server
// answers InProgress, that is it recorded the start, does it run the
// upgrade and queue the outcome. A refused report is simply sent again, and
// an agent restarted mid-upgrade resumes it.
func (a *Agent) handleUpgrade(ctx context.Context, auth *wire.UpgradeAuthorization) {
	if auth == nil || a.upgraded == auth.TargetVersion || a.upgrade != nil {
		return
	}
	switch auth.State {
	case wire.UpgradeStateAuthorized:
		if a.Upgrader == nil {
			a.Log.Warn("Upgrade authorized but no upgrade command is configured", "target", auth.TargetVersion, "window", auth.Window)
			a.upgraded = auth.TargetVersion
			return
		}
		a.upgrade = &wire.UpgradeReport{State: wire.UpgradeStateInProgress, TargetVersion: auth.TargetVersion, Message: "upgrade started"}
	case wire.UpgradeStateInProgress:
		if a.Upgrader == nil {
			return
		}
		a.upgraded = auth.TargetVersion
		a.Log.Info("Upgrading", "target", auth.TargetVersion, "window", auth.Window)
		report := &wire.UpgradeReport{State: wire.UpgradeStateSucceeded, TargetVersion: auth.TargetVersion, Message: "upgrade finished"}
		if err := a.Upgrader.Upgrade(ctx, auth.TargetVersion); err != nil {
			report.State, report.Message = wire.UpgradeStateFailed, text.Truncate(err.Error(), 1024)
			a.Log.Error("Upgrade failed", "target", auth.TargetVersion, "error", err)
		}
		a.upgrade = report
	}
}

// CheckInOnce checks in once, retrying once after a refusal that tells how
// to succeed: a sequence out of step (continuing from the service's) or a
// Retry-After of at most maxWait.
func (a *Agent) CheckInOnce(ctx context.Context, maxWait time.Duration) (*wire.Response, error) {
	resp, err := a.CheckIn(ctx)
	if err == nil {
		return resp, nil
	}
	wait := time.Duration(0)
	switch d := retryAfter(err); {
	case a.resync(err):
	case d > 0 && d <= maxWait:
		wait = d
	default:
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, err
	case <-time.After(wait):
	}
	return a.CheckIn(ctx)
}

// retryAfter is the Retry-After of a 429 or 503 refusal (0: none).
func retryAfter(err error) time.Duration {
	var se *StatusError
	if errors.As(err, &se) && (se.Code == http.StatusTooManyRequests || se.Code == http.StatusServiceUnavailable) {
		return se.RetryAfter
	}
	return 0
}

// jitterUp lengthens d by up to frac, never shortens it.
func jitterUp(d time.Duration, frac float64) time.Duration {
	return d + time.Duration(float64(d)*frac*rand.Float64()) //nolint:gosec // jitter, not security
}

func jitter(d time.Duration, frac float64) time.Duration {
	return time.Duration(float64(d) * (1 - frac + 2*frac*rand.Float64())) //nolint:gosec // jitter, not security
}

// backoff is exponential from 1s, capped at maxWait, with full jitter.
func backoff(failures int, maxWait time.Duration) time.Duration {
	ceiling := min(time.Second<<min(failures-1, 20), maxWait)
	return time.Duration(rand.Int64N(int64(ceiling))) + 100*time.Millisecond //nolint:gosec // jitter, not security
}
