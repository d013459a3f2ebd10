package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/itmanager-io/itmanager/internal/checkin/wire"
)

func TestNextCheckIn(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)
	yes, no := true, false
	reported := wire.Facts{OSVersion: "24.04", Addresses: []string{"10.0.0.7", "fd00::7"}, DiskEncrypted: &yes, Attributes: map[string]string{"arch": "amd64"}}
	changed := func(f func(*wire.Facts)) wire.Facts {
		c := reported
		c.Attributes = map[string]string{"arch": "amd64"}
		f(&c)
		return c
	}
	unencrypted := changed(func(f *wire.Facts) { f.DiskEncrypted = &no })
	accepted := LastAnswer{At: t0, Wait: 57 * time.Second, Hold: 10 * time.Second}
	for name, c := range map[string]struct {
		now      time.Duration // after t0
		reported *wire.Facts
		current  wire.Facts
		last     LastAnswer
		want     time.Duration // after t0
		reason   Reason
	}{
		"unchanged facts wait for the (jittered) interval":          {now: 20 * time.Second, reported: &reported, current: reported, last: accepted, want: 57 * time.Second, reason: ReasonDue},
		"addresses in another order are unchanged":                  {now: 20 * time.Second, reported: &reported, current: changed(func(f *wire.Facts) { f.Addresses = []string{"fd00::7", "10.0.0.7"} }), last: accepted, want: 57 * time.Second, reason: ReasonDue},
		"disk encryption turned off checks in at once when allowed": {now: 20 * time.Second, reported: &reported, current: unencrypted, last: accepted, want: 20 * time.Second, reason: ReasonFactsChanged},
		"encryption becoming unknown is a change":                   {now: 20 * time.Second, reported: &reported, current: changed(func(f *wire.Facts) { f.DiskEncrypted = nil }), last: accepted, want: 20 * time.Second, reason: ReasonFactsChanged},
		"a new address is a change":                                 {now: 20 * time.Second, reported: &reported, current: changed(func(f *wire.Facts) { f.Addresses = append(f.Addresses, "10.0.0.8") }), last: accepted, want: 20 * time.Second, reason: ReasonFactsChanged},
		"a new OS version is a change":                              {now: 20 * time.Second, reported: &reported, current: changed(func(f *wire.Facts) { f.OSVersion = "24.10" }), last: accepted, want: 20 * time.Second, reason: ReasonFactsChanged},
		"a changed attribute is a change":                           {now: 20 * time.Second, reported: &reported, current: changed(func(f *wire.Facts) { f.Attributes["kernel"] = "6.12" }), last: accepted, want: 20 * time.Second, reason: ReasonFactsChanged},
		"a change within the service's minimum waits for it":        {now: 3 * time.Second, reported: &reported, current: unencrypted, last: accepted, want: 10 * time.Second, reason: ReasonFactsChanged},
		"a change after a 429 waits for its Retry-After":            {now: 1 * time.Second, reported: &reported, current: unencrypted, last: LastAnswer{At: t0, Wait: 5500 * time.Millisecond, Hold: 5 * time.Second}, want: 5 * time.Second, reason: ReasonFactsChanged},
		"a change never cuts a backoff short":                       {now: 1 * time.Second, reported: &reported, current: unencrypted, last: LastAnswer{At: t0, Wait: 8 * time.Second, Hold: 8 * time.Second}, want: 8 * time.Second, reason: ReasonDue},
		"nothing accepted yet: the due check-in carries the facts":  {now: 1 * time.Second, current: unencrypted, last: LastAnswer{At: t0, Wait: 4 * time.Second, Hold: 0}, want: 4 * time.Second, reason: ReasonDue},
		"a wait shorter than the hold is held":                      {now: 0, reported: &reported, current: reported, last: LastAnswer{At: t0, Wait: time.Second, Hold: 10 * time.Second}, want: 10 * time.Second, reason: ReasonDue},
	} {
		t.Run(name, func(t *testing.T) {
			at, reason := NextCheckIn(t0.Add(c.now), c.reported, c.current, c.last)
			if got := at.Sub(t0); got != c.want || reason != c.reason {
				t.Errorf("NextCheckIn = t0%+v (%s), want t0%+v (%s)", got, reason, c.want, c.reason)
			}
		})
	}
	if at, _ := NextCheckIn(t0, nil, reported, LastAnswer{}); at.After(t0) {
		t.Errorf("at start the agent checks in at once, not at %s", at)
	}
}

// TestAnswerKeepsTheServiceMinimumAndJittersTheInterval: after an accepted
// check-in the next periodic one is due within ±10% of the interval (and
// spread), an early one is held for the service's minimum when it says it,
// else for a conservative assumed one or what a 429 taught.
func TestAnswerKeepsTheServiceMinimumAndJittersTheInterval(t *testing.T) {
	a := &Agent{Log: slog.New(slog.DiscardHandler), Interval: time.Minute, MaxBackoff: time.Minute}
	a.interval = a.Interval
	waits := map[time.Duration]bool{}
	for range 50 {
		last := a.answered(context.Background(), &wire.Response{NextCheckInSeconds: 60, MinIntervalMilliseconds: 1500}, nil)
		if last.Wait < 54*time.Second || last.Wait > 66*time.Second {
			t.Fatalf("periodic wait %s is outside 60s ±10%%", last.Wait)
		}
		if last.Hold != 1500*time.Millisecond {
			t.Fatalf("hold %s, want the service's 1.5s", last.Hold)
		}
		waits[last.Wait] = true
	}
	if len(waits) < 10 {
		t.Errorf("periodic waits are not jittered: %v", waits)
	}

	b := &Agent{Log: slog.New(slog.DiscardHandler), Interval: time.Minute, MaxBackoff: time.Minute}
	b.interval = b.Interval
	if last := b.answered(context.Background(), &wire.Response{NextCheckInSeconds: 5}, nil); last.Hold != 4500*time.Millisecond {
		t.Errorf("the assumed minimum is at most 90%% of the interval: hold %s", last.Hold)
	}
	if last := b.answered(context.Background(), &wire.Response{NextCheckInSeconds: 60}, nil); last.Hold != assumedMinInterval {
		t.Errorf("a service that does not say its minimum: hold %s, want the assumed %s", last.Hold, assumedMinInterval)
	}
	last := b.answered(context.Background(), nil, &StatusError{Code: http.StatusTooManyRequests, RetryAfter: 20 * time.Second})
	if last.Hold != 20*time.Second {
		t.Errorf("after a 429: hold %s, want its Retry-After", last.Hold)
	}
	if b.learnedMin < 20*time.Second || b.learnedMin > 25*time.Second {
		t.Errorf("a 429 right after an accepted check-in teaches about its Retry-After as minimum, learnt %s", b.learnedMin)
	}
}

// fakeService is an httptest check-in service that records every check-in
// and answers as answer says.
type fakeService struct {
	mu       sync.Mutex
	checkIns []received
	answer   func(n int) (code int, resp wire.Response, retryAfter string)
	onCheck  func(req wire.Request) // called under mu
	got      chan received
}

type received struct {
	at  time.Time
	req wire.Request
}

func (f *fakeService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req wire.Request
	_ = json.Unmarshal(body, &req)
	f.mu.Lock()
	rc := received{at: time.Now(), req: req}
	f.checkIns = append(f.checkIns, rc)
	n := len(f.checkIns)
	if f.onCheck != nil {
		f.onCheck(req)
	}
	f.mu.Unlock()
	code, resp, ra := f.answer(n)
	if ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if code == http.StatusOK {
		_ = json.NewEncoder(w).Encode(resp)
	} else {
		_ = json.NewEncoder(w).Encode(wire.Error{Error: "checking in too often"})
	}
	f.got <- rc
}

// pollingDevice is a device whose address a test changes, counting how
// often the agent gathered it.
type pollingDevice struct {
	mu     sync.Mutex
	addr   netip.Addr
	gather int
}

func (d *pollingDevice) interfaces() ([]netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gather++
	return []netip.Addr{d.addr}, nil
}

// set changes the address and says how many gathers came before.
func (d *pollingDevice) set(a string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addr = netip.MustParseAddr(a)
	return d.gather
}

func (d *pollingDevice) gathers() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.gather
}

// runAgent runs an agent polling every 5ms against svc until the test ends.
func runAgent(t *testing.T, svc *fakeService, dev *pollingDevice) {
	t.Helper()
	svc.got = make(chan received, 100)
	srv := httptest.NewServer(svc)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	for k, v := range map[string]string{wire.SecretKeyURL: srv.URL, wire.SecretKeyToken: "t"} {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a := &Agent{
		EnrolmentDir: dir, StateFile: filepath.Join(dir, "seq"), Version: "test",
		System:   System{Root: t.TempDir(), Hostname: func() (string, error) { return "dev", nil }, Interfaces: dev.interfaces},
		Log:      slog.New(slog.DiscardHandler),
		Interval: time.Hour, MaxBackoff: time.Minute, FactPoll: 5 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func next(t *testing.T, svc *fakeService) received {
	t.Helper()
	select {
	case rc := <-svc.got:
		return rc
	case <-time.After(10 * time.Second): // the periodic check-in is an hour away
		t.Fatal("no check-in")
		return received{}
	}
}

// waitGathers waits until the agent gathered at least n times (polls).
func waitGathers(t *testing.T, dev *pollingDevice, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for dev.gathers() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the agent gathered %d times, not %d", dev.gathers(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAFactChangeChecksInAtTheFirstPollThatSeesIt: with the service's
// minimum passed, the poll that sees a new address is followed directly by
// the check-in carrying it (no further poll in between: within one poll
// period), long before the hour-long interval; unchanged facts meanwhile
// cause no check-in; sequences stay consecutive.
func TestAFactChangeChecksInAtTheFirstPollThatSeesIt(t *testing.T) {
	dev := &pollingDevice{addr: netip.MustParseAddr("10.0.0.7")}
	gathersAtCheckIn := -1
	svc := &fakeService{
		answer: func(int) (int, wire.Response, string) {
			return http.StatusOK, wire.Response{NextCheckInSeconds: 3600, MinIntervalMilliseconds: 1}, ""
		},
	}
	svc.onCheck = func(wire.Request) { gathersAtCheckIn = dev.gathers() }
	runAgent(t, svc, dev)
	first := next(t, svc)
	if got := first.req.Facts.Addresses; len(got) != 1 || got[0] != "10.0.0.7" {
		t.Fatalf("first check-in reported %v", got)
	}

	waitGathers(t, dev, 40) // ~40 polls with unchanged facts
	svc.mu.Lock()
	if n := len(svc.checkIns); n != 1 {
		t.Errorf("%d check-ins with unchanged facts, want only the first", n)
	}
	svc.mu.Unlock()

	changedAt := time.Now()
	before := dev.set("10.0.0.8")
	second := next(t, svc)
	t.Logf("fact written → check-in received: %s (poll period 5ms)", second.at.Sub(changedAt))
	if got := second.req.Facts.Addresses; len(got) != 1 || got[0] != "10.0.0.8" {
		t.Fatalf("second check-in reported %v", got)
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	// Gather before+1 is the poll that saw the change, before+2 the check-in's own.
	if gathersAtCheckIn != before+2 {
		t.Errorf("the check-in came at gather %d, want %d: the poll that saw the change is followed by the check-in", gathersAtCheckIn, before+2)
	}
	if second.req.Sequence != first.req.Sequence+1 {
		t.Errorf("sequence %d after %d", second.req.Sequence, first.req.Sequence)
	}
}

// TestAFactChangeAfterA429WaitsForItsRetryAfter: a fact change refused with
// 429 Retry-After 1 is not sent again before that second passed (though
// the agent keeps polling), and then is, long before the interval.
func TestAFactChangeAfterA429WaitsForItsRetryAfter(t *testing.T) {
	dev := &pollingDevice{addr: netip.MustParseAddr("10.0.0.7")}
	svc := &fakeService{
		answer: func(n int) (int, wire.Response, string) {
			if n == 2 {
				return http.StatusTooManyRequests, wire.Response{}, "1"
			}
			return http.StatusOK, wire.Response{NextCheckInSeconds: 3600, MinIntervalMilliseconds: 1}, ""
		},
	}
	runAgent(t, svc, dev)
	next(t, svc)
	waitGathers(t, dev, 3)
	dev.set("10.0.0.8")
	refused := next(t, svc)
	again := next(t, svc)
	t.Logf("429 → next check-in: %s (Retry-After 1s)", again.at.Sub(refused.at))
	if again.at.Sub(refused.at) < time.Second {
		t.Errorf("checked in again %s after a 429 with Retry-After 1s", again.at.Sub(refused.at))
	}
	if got := again.req.Facts.Addresses; len(got) != 1 || got[0] != "10.0.0.8" {
		t.Errorf("the check-in after the 429 reported %v", got)
	}
	select {
	case rc := <-svc.got:
		t.Errorf("an extra check-in %+v", rc.req)
	default:
	}
}
