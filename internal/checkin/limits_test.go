package checkin

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestAdmit(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	created := now.Add(-time.Hour)
	const minInterval = 10 * time.Second
	tests := map[string]struct {
		st             LeaseState
		seq            uint64
		wantCode       int
		wantRetryAfter time.Duration
		wantLast       uint64
		wantMessage    string
	}{
		"the first check-in, sequence 1": {st: LeaseState{Created: now}, seq: 1},
		"the first check-in right after enrolment may not skip ahead": {
			st: LeaseState{Created: now}, seq: 2, wantCode: 409, wantLast: 0, wantMessage: "sequence 2 advances too far: the last accepted is 0",
		},
		"the first check-in an hour after enrolment may be 360 ahead, plus one": {st: LeaseState{Created: created}, seq: 361},
		"the first check-in an hour after enrolment, 362 is too far": {
			st: LeaseState{Created: created}, seq: 362, wantCode: 409, wantMessage: "(at most 361 now)",
		},
		"one interval after the last, the next sequence": {st: LeaseState{Sequence: 7, Renewed: at(-minInterval), Created: created}, seq: 8},
		"one interval after the last, two ahead":         {st: LeaseState{Sequence: 7, Renewed: at(-minInterval), Created: created}, seq: 9},
		"one interval after the last, three ahead is too far": {
			st: LeaseState{Sequence: 7, Renewed: at(-minInterval), Created: created}, seq: 10, wantCode: 409, wantLast: 7,
			wantMessage: "sequence 10 advances too far: the last accepted is 7, and a sequence may advance by at most one per 10s elapsed, plus one (at most 9 now)",
		},
		"2^64-1 is refused": {
			st: LeaseState{Sequence: 7, Renewed: at(-time.Minute), Created: created}, seq: math.MaxUint64, wantCode: 409, wantLast: 7,
		},
		"sooner than the interval: 429 with the rest of the interval": {
			st: LeaseState{Sequence: 7, Renewed: at(-3 * time.Second), Created: created}, seq: 8, wantCode: 429, wantRetryAfter: 7 * time.Second,
			wantMessage: "checking in too often: at most one check-in per 10s",
		},
		"429 comes before the sequence is judged": {
			st: LeaseState{Sequence: 7, Renewed: at(-time.Second), Created: created}, seq: math.MaxUint64, wantCode: 429, wantRetryAfter: 9 * time.Second,
		},
		"a replay": {
			st: LeaseState{Sequence: 7, Renewed: at(-time.Minute), Created: created}, seq: 7, wantCode: 409, wantLast: 7,
			wantMessage: "stale check-in: sequence 7 is not newer than the last accepted 7",
		},
		"an older sequence": {st: LeaseState{Sequence: 7, Renewed: at(-time.Minute), Created: created}, seq: 3, wantCode: 409, wantLast: 7},
		"a renew time slightly in the future (another replica's clock) waits at most one interval": {
			st: LeaseState{Sequence: 7, Renewed: at(2 * time.Second), Created: created}, seq: 8, wantCode: 429, wantRetryAfter: minInterval,
		},
		"a renew time far in the future does not lock the device out": {
			st: LeaseState{Sequence: 7, Renewed: at(time.Hour), Created: created}, seq: 8,
		},
		"a long sleep allows a larger step": {st: LeaseState{Sequence: 7, Renewed: at(-72 * time.Hour), Created: created}, seq: 7 + 25920 + 1},
		"near 2^64-1 the cap saturates instead of wrapping": {
			st: LeaseState{Sequence: math.MaxUint64 - 1, Renewed: at(-time.Hour), Created: created}, seq: math.MaxUint64,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Admit(tc.st, tc.seq, now, minInterval)
			if tc.wantCode == 0 {
				if got != nil {
					t.Fatalf("refused: %d %s", got.Code, got.Message)
				}
				return
			}
			if got == nil {
				t.Fatalf("admitted; want %d", tc.wantCode)
			}
			if got.Code != tc.wantCode || got.RetryAfter != tc.wantRetryAfter || !strings.Contains(got.Message, tc.wantMessage) {
				t.Errorf("got %d, retry after %s, %q; want %d, %s, containing %q", got.Code, got.RetryAfter, got.Message, tc.wantCode, tc.wantRetryAfter, tc.wantMessage)
			}
			if tc.wantCode == 409 && (got.LastSequence == nil || *got.LastSequence != tc.wantLast) {
				t.Errorf("lastSequence %v, want %d", got.LastSequence, tc.wantLast)
			}
			if tc.wantCode == 429 && got.LastSequence != nil {
				t.Errorf("a 429 tells the last sequence")
			}
		})
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, 1001 * time.Millisecond: 2, 9500 * time.Millisecond: 10, 10 * time.Second: 10} {
		if got := RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%s) = %d, want %d", d, got, want)
		}
	}
}

func TestRecentCheckIns(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	r := newRecentCheckIns(2)
	if r.wait("a", now) != 0 {
		t.Fatal("an unknown key waits")
	}
	r.remember("a", now.Add(5*time.Second), now)
	if got := r.wait("a", now.Add(time.Second)); got != 4*time.Second {
		t.Errorf("wait = %s, want 4s", got)
	}
	if got := r.wait("a", now.Add(5*time.Second)); got != 0 {
		t.Errorf("wait after the interval = %s, want 0", got)
	}
	r.remember("b", now.Add(5*time.Second), now)
	r.remember("c", now.Add(5*time.Second), now)
	r.remember("d", now.Add(5*time.Second), now) // full of live entries: not remembered
	if r.wait("d", now) != 0 {
		t.Error("remembered past the bound")
	}
	r.remember("e", now.Add(20*time.Second), now.Add(10*time.Second)) // b and c expired: swept
	if r.wait("e", now.Add(10*time.Second)) == 0 {
		t.Error("expired entries were not swept to make room")
	}
	if !r.begin("x") || r.begin("x") {
		t.Error("a key in progress can begin twice")
	}
	r.end("x")
	if !r.begin("x") {
		t.Error("a key that ended cannot begin again")
	}
}

// blockingReader blocks every Get until release is closed.
type blockingReader struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blockingReader) Get(ctx context.Context, _ client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
	b.entered <- struct{}{}
	<-b.release
	return context.Canceled
}

func (b *blockingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return nil
}

var _ client.Reader = &blockingReader{}

func TestServerAnswers503WhenMaxInFlightAreBusy(t *testing.T) {
	br := &blockingReader{entered: make(chan struct{}, 4), release: make(chan struct{})}
	s := &Server{Reader: br, MaxInFlight: 1, Clock: fixedClock{}}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	type answer struct {
		code       int
		retryAfter string
		body       Error
	}
	req := func(device string) answer {
		r, _ := http.NewRequest(http.MethodPost, srv.URL+Endpoint("", device), strings.NewReader(`{"sequence":1,"facts":{}}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Error(err)
			return answer{}
		}
		defer resp.Body.Close()
		a := answer{code: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
		_ = json.NewDecoder(resp.Body).Decode(&a.body)
		return a
	}
	done := make(chan answer)
	go func() { done <- req("a") }()
	<-br.entered // the first check-in holds the only slot

	busy := req("b")
	if busy.code != http.StatusServiceUnavailable || busy.retryAfter != "1" || !strings.Contains(busy.body.Error, "busy") {
		t.Errorf("got %d, Retry-After %q, %q; want 503, 1, busy", busy.code, busy.retryAfter, busy.body.Error)
	}
	close(br.release)
	first := <-done
	if first.code != http.StatusServiceUnavailable || first.retryAfter != "" {
		t.Errorf("the first check-in (API error) got %d, Retry-After %q", first.code, first.retryAfter)
	}
	// The slot is free again.
	br.release = make(chan struct{})
	close(br.release)
	if again := req("c"); again.retryAfter != "" {
		t.Errorf("after the slot was freed: %d with Retry-After", again.code)
	}
}

type fixedClock struct{}

func (fixedClock) Now() time.Time                  { return time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC) }
func (fixedClock) Since(t time.Time) time.Duration { return fixedClock{}.Now().Sub(t) }
