package checkin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin/wire"
	"github.com/itmanager-io/itmanager/internal/rollout"
)

// FieldManager is the server-side apply field manager of observed facts.
const FieldManager = "itmanager-checkin"

var checkIns = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "itmanager_checkins_total",
	Help: "Agent check-ins by HTTP status code.",
}, []string{"code"})

func init() { ctrlmetrics.Registry.MustRegister(checkIns) }

// Server serves agent check-ins. It runs as its own process under its own
// ServiceAccount, which may only get and update Leases in DevicesNamespace,
// get Devices and patch devices/status: it reads both from the API server
// (it may not list or watch, so it keeps no informer cache).
type Server struct {
	// Reader reads Devices and Leases from the API server.
	Reader           client.Reader
	Writer           client.Client
	Clock            clock.PassiveClock
	DevicesNamespace string
	// StaleAfter is the CheckedIn threshold; it is written to each Lease as
	// its duration.
	StaleAfter time.Duration
	// Interval is how often agents are asked to check in.
	Interval time.Duration
	// MinInterval is the shortest time between two accepted check-ins of a
	// device (default DefaultMinInterval), judged from its Lease.
	MinInterval time.Duration
	// MaxInFlight bounds the check-ins answered at once (default 64); more
	// are answered 503 with Retry-After.
	MaxInFlight int
	// AddressCIDRs are the ranges reported addresses must fall in; empty
	// allows any.
	AddressCIDRs []netip.Prefix
	Log          logr.Logger

	init     sync.Once
	inflight chan struct{}
	recent   *recentCheckIns
}

// DefaultMaxInFlight is the default of --checkin-max-inflight.
const DefaultMaxInFlight = 64

func (s *Server) setup() {
	s.init.Do(func() {
		if s.MinInterval <= 0 {
			s.MinInterval = DefaultMinInterval
		}
		if s.MaxInFlight <= 0 {
			s.MaxInFlight = DefaultMaxInFlight
		}
		s.inflight = make(chan struct{}, s.MaxInFlight)
		s.recent = newRecentCheckIns(100_000)
	})
}

// httpError is a refusal with its status code; retryAfter (429, 503) is
// sent as Retry-After, lastSequence (409) in the body.
type httpError struct {
	code         int
	msg          string
	retryAfter   time.Duration
	lastSequence *uint64
}

func (e *httpError) Error() string { return e.msg }

func fail(code int, format string, args ...any) *httpError {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

func refused(r *Refusal) *httpError {
	return &httpError{code: r.Code, msg: r.Message, retryAfter: r.RetryAfter, lastSequence: r.LastSequence}
}

// errUnauthorized is the one answer for an unknown device, a device without
// an enrolled agent and a wrong token, so none can be told from another.
var errUnauthorized = fail(http.StatusUnauthorized, "invalid device token")

// Handler returns the HTTP handler of the service.
func (s *Server) Handler() http.Handler {
	s.setup()
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathPrefix+"{name}/checkin", s.serveCheckIn)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	return mux
}

func (s *Server) serveCheckIn(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var resp *Response
	var err error
	select {
	case s.inflight <- struct{}{}:
		resp, err = s.checkIn(r.Context(), name, w, r)
		<-s.inflight
	default:
		err = &httpError{code: http.StatusServiceUnavailable, msg: "the check-in service is busy; retry later", retryAfter: time.Second}
	}
	if err != nil {
		var he *httpError
		if !errors.As(err, &he) {
			s.Log.Error(err, "Check-in failed", "device", name)
			he = fail(http.StatusServiceUnavailable, "check-in could not be recorded; retry later")
		}
		checkIns.WithLabelValues(strconv.Itoa(he.code)).Inc()
		if he.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds(he.retryAfter)))
		}
		writeJSON(w, he.code, Error{Error: he.msg, LastSequence: he.lastSequence})
		return
	}
	checkIns.WithLabelValues("200").Inc()
	writeJSON(w, http.StatusOK, resp)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) checkIn(ctx context.Context, name string, w http.ResponseWriter, r *http.Request) (*Response, error) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, fail(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return nil, errUnauthorized
	}
	req, err := decode(w, r)
	if err != nil {
		return nil, err
	}
	// What this replica remembers is keyed by the presented token's hash,
	// so a caller without the token never delays the real agent.
	key := name + "/" + HashToken(token)
	now := s.Clock.Now()
	if wait := s.recent.wait(key, now); wait > 0 {
		return nil, tooOften(wait, s.MinInterval)
	}
	if !s.recent.begin(key) {
		return nil, tooOften(s.MinInterval, s.MinInterval)
	}
	defer s.recent.end(key)

	lease, err := s.authenticateLease(ctx, name, token)
	if err != nil {
		return nil, err
	}
	if rf := Admit(leaseState(lease), req.Sequence, now, s.MinInterval); rf != nil {
		if rf.Code == http.StatusTooManyRequests {
			s.recent.remember(key, now.Add(rf.RetryAfter), now)
		}
		return nil, refused(rf)
	}
	dev, err := s.authenticateDevice(ctx, name, lease)
	if err != nil {
		return nil, err
	}
	if err := validate(req); err != nil {
		return nil, err
	}
	upgradePatch, err := s.upgradeTransition(dev, req.Upgrade)
	if err != nil {
		return nil, err
	}

	observed, warnings := s.observed(req.Facts)
	if !equality.Semantic.DeepEqual(dev.Status.Observed, observed) {
		if err := s.applyObserved(ctx, dev, observed); err != nil {
			return nil, fmt.Errorf("record facts of device %s: %w", name, err)
		}
	}
	if upgradePatch != nil {
		if err := s.patchUpgrade(ctx, dev, upgradePatch(now)); err != nil {
			return nil, err
		}
	}
	if err := s.renew(ctx, lease, name, req.Sequence, now); err != nil {
		return nil, err
	}
	s.recent.remember(key, now.Add(s.MinInterval), now)

	resp := &Response{NextCheckInSeconds: int(s.Interval / time.Second), MinIntervalMilliseconds: s.MinInterval.Milliseconds(), Warnings: warnings}
	if u := dev.Status.Upgrade; u != nil && rollout.Authorizes(u.State) {
		state := u.State
		if req.Upgrade != nil {
			state = itmv1.UpgradeState(req.Upgrade.State)
		}
		if rollout.Authorizes(state) {
			resp.Upgrade = &UpgradeAuthorization{State: wire.UpgradeState(state), TargetVersion: u.TargetVersion, Window: u.Window}
		}
	}
	return resp, nil
}

func tooOften(wait, minInterval time.Duration) *httpError {
	return &httpError{code: http.StatusTooManyRequests, retryAfter: wait,
		msg: fmt.Sprintf("checking in too often: at most one check-in per %s", minInterval)}
}

func leaseState(lease *coordinationv1.Lease) LeaseState {
	st := LeaseState{Sequence: lastSequence(lease), Created: lease.CreationTimestamp.Time}
	if lease.Spec.RenewTime != nil {
		t := lease.Spec.RenewTime.Time
		st.Renewed = &t
	}
	return st
}

func decode(w http.ResponseWriter, r *http.Request) (*Request, error) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	req := &Request{}
	if err := dec.Decode(req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, fail(http.StatusRequestEntityTooLarge, "check-in body exceeds %d bytes", MaxBodyBytes)
		}
		return nil, fail(http.StatusBadRequest, "malformed check-in: %v", err)
	}
	if dec.More() {
		return nil, fail(http.StatusBadRequest, "malformed check-in: data after the JSON object")
	}
	return req, nil
}

// authenticateLease reads the device's Lease and compares the token with
// the hash on it, in constant time, also when there is no Lease, so an
// unknown device and a wrong token take as long and get one answer.
func (s *Server) authenticateLease(ctx context.Context, name, token string) (*coordinationv1.Lease, error) {
	lease := &coordinationv1.Lease{}
	err := s.Reader.Get(ctx, types.NamespacedName{Namespace: s.DevicesNamespace, Name: name}, lease)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	match := tokenMatches(token, lease.Annotations[AnnotationTokenHash])
	if err != nil || !match {
		return nil, errUnauthorized
	}
	return lease, nil
}

// authenticateDevice checks that the Device exists, has its agent enabled
// and controls the Lease (by UID: a Lease left from an earlier Device of
// the same name holds that device's token).
func (s *Server) authenticateDevice(ctx context.Context, name string, lease *coordinationv1.Lease) (*itmv1.Device, error) {
	dev := &itmv1.Device{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Name: name}, dev); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, errUnauthorized
		}
		return nil, err
	}
	if dev.DeletionTimestamp != nil || dev.Spec.Agent == nil || !dev.Spec.Agent.Enabled || !metav1.IsControlledBy(lease, dev) {
		return nil, errUnauthorized
	}
	return dev, nil
}

func lastSequence(lease *coordinationv1.Lease) uint64 {
	n, _ := strconv.ParseUint(lease.Annotations[AnnotationSequence], 10, 64)
	return n
}

func validate(req *Request) error {
	f := req.Facts
	for _, c := range []struct {
		field, value string
		max          int
	}{
		{"facts.osVersion", f.OSVersion, 128},
		{"facts.hostname", f.Hostname, 253},
		{"facts.agentVersion", f.AgentVersion, 64},
	} {
		if len(c.value) > c.max {
			return fail(http.StatusBadRequest, "%s: must be at most %d characters", c.field, c.max)
		}
	}
	if len(f.Addresses) > 8 {
		return fail(http.StatusBadRequest, "facts.addresses: at most 8 addresses, got %d", len(f.Addresses))
	}
	for i, a := range f.Addresses {
		if ip, err := netip.ParseAddr(a); err != nil || ip.Zone() != "" {
			return fail(http.StatusBadRequest, "facts.addresses[%d]: %q is not an IP address", i, a)
		}
	}
	if len(f.Attributes) > 32 {
		return fail(http.StatusBadRequest, "facts.attributes: at most 32 attributes, got %d", len(f.Attributes))
	}
	for k, v := range f.Attributes {
		if k == "" || len(k) > 63 || len(v) > 256 {
			return fail(http.StatusBadRequest, "facts.attributes[%q]: keys are 1-63 and values at most 256 characters", k)
		}
	}
	if u := req.Upgrade; u != nil {
		if len(u.Message) > 1024 {
			return fail(http.StatusBadRequest, "upgrade.message: must be at most 1024 characters")
		}
		if len(u.TargetVersion) > 128 {
			return fail(http.StatusBadRequest, "upgrade.targetVersion: must be at most 128 characters")
		}
	}
	return nil
}

// observed turns reported facts into status.observed, keeping only addresses
// inside AddressCIDRs and saying which were dropped.
func (s *Server) observed(f Facts) (*itmv1.ObservedFacts, []string) {
	o := &itmv1.ObservedFacts{
		OSVersion: f.OSVersion, Hostname: f.Hostname, DiskEncrypted: f.DiskEncrypted,
		AgentVersion: f.AgentVersion, Attributes: f.Attributes,
	}
	if len(o.Attributes) == 0 {
		o.Attributes = nil
	}
	var warnings []string
	for _, a := range f.Addresses {
		ip := netip.MustParseAddr(a).Unmap() // validated
		if !s.allowed(ip) {
			warnings = append(warnings, fmt.Sprintf("address %s is outside the allowed ranges and was not recorded", a))
			continue
		}
		if !slices.Contains(o.Addresses, ip.String()) {
			o.Addresses = append(o.Addresses, ip.String())
		}
	}
	slices.Sort(o.Addresses)
	if equality.Semantic.DeepEqual(o, &itmv1.ObservedFacts{}) {
		// No facts: no status.observed at all. Applying an empty object
		// would leave a null the schema refuses (that answered 503 and
		// left the Lease unrenewed).
		return nil, warnings
	}
	return o, warnings
}

func (s *Server) allowed(ip netip.Addr) bool {
	if len(s.AddressCIDRs) == 0 {
		return true
	}
	for _, p := range s.AddressCIDRs {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// applyObserved writes status.observed with server-side apply, so the
// check-in service owns exactly those fields and removes facts no longer
// reported (all of status.observed when observed is nil).
func (s *Server) applyObserved(ctx context.Context, dev *itmv1.Device, observed *itmv1.ObservedFacts) error {
	status := map[string]any{}
	if observed != nil {
		raw, err := json.Marshal(observed)
		if err != nil {
			return err
		}
		var obs map[string]any
		if err := json.Unmarshal(raw, &obs); err != nil {
			return err
		}
		status["observed"] = obs
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": itmv1.GroupVersion.String(),
		"kind":       "Device",
		"metadata":   map[string]any{"name": dev.Name, "uid": string(dev.UID)},
		"status":     status,
	}}
	return s.Writer.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldManager), client.ForceOwnership)
}

type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// upgradeTransition checks that a reported upgrade step is one the operator
// authorized and returns the patch that records it (nil when there is
// nothing to record).
func (s *Server) upgradeTransition(dev *itmv1.Device, report *UpgradeReport) (func(time.Time) []jsonPatchOp, error) {
	if report == nil {
		return nil, nil
	}
	cur := dev.Status.Upgrade
	if cur == nil {
		return nil, fail(http.StatusForbidden, "no upgrade is authorized for device %s", dev.Name)
	}
	if report.TargetVersion != cur.TargetVersion {
		return nil, fail(http.StatusForbidden, "upgrade to %q is not authorized; the authorized target is %q", report.TargetVersion, cur.TargetVersion)
	}
	to := itmv1.UpgradeState(report.State) // the wire's values are the API's
	switch rollout.Transition(rollout.ActorDevice, cur.State, to) {
	case rollout.Same:
		return nil, nil // a repeat of the last report, for example after a lost answer
	case rollout.Refused:
		return nil, fail(http.StatusForbidden, "upgrade transition %s -> %s is not allowed", cur.State, to)
	}
	from := cur.State
	return func(now time.Time) []jsonPatchOp {
		ts := metav1.NewTime(now).UTC().Format(time.RFC3339)
		ops := []jsonPatchOp{
			// The test makes the write a compare-and-swap: a concurrent
			// change of the state by the operator wins.
			{Op: "test", Path: "/status/upgrade/state", Value: from},
			{Op: "replace", Path: "/status/upgrade/state", Value: to},
			{Op: "add", Path: "/status/upgrade/message", Value: report.Message},
		}
		if to == itmv1.UpgradeStateInProgress {
			ops = append(ops, jsonPatchOp{Op: "add", Path: "/status/upgrade/startedAt", Value: ts})
		} else {
			ops = append(ops, jsonPatchOp{Op: "add", Path: "/status/upgrade/finishedAt", Value: ts})
		}
		return ops
	}, nil
}

func (s *Server) patchUpgrade(ctx context.Context, dev *itmv1.Device, ops []jsonPatchOp) error {
	data, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	// A failed "test" operation comes back as 422 Invalid.
	err = s.Writer.Status().Patch(ctx, dev, client.RawPatch(types.JSONPatchType, data))
	if apierrors.IsInvalid(err) || apierrors.IsConflict(err) {
		return fail(http.StatusConflict, "the upgrade of device %s changed meanwhile; check in again", dev.Name)
	}
	return err
}

// renew renews the Lease with the server's clock and records the sequence,
// as one update guarded by the Lease's resourceVersion. On a conflict (a
// concurrent check-in of the same device, perhaps on another replica) the
// live Lease is judged again, so of two concurrent check-ins one wins and
// the other is refused.
func (s *Server) renew(ctx context.Context, lease *coordinationv1.Lease, name string, seq uint64, now time.Time) error {
	err := s.updateLease(ctx, lease, name, seq, now)
	if apierrors.IsConflict(err) {
		live := &coordinationv1.Lease{}
		if err := s.Reader.Get(ctx, client.ObjectKeyFromObject(lease), live); err != nil {
			return fmt.Errorf("renew the Lease of device %s: %w", name, err)
		}
		if rf := Admit(leaseState(live), seq, now, s.MinInterval); rf != nil {
			return refused(rf)
		}
		err = s.updateLease(ctx, live, name, seq, now)
	}
	if apierrors.IsConflict(err) {
		return &httpError{code: http.StatusConflict, msg: fmt.Sprintf("a concurrent check-in of device %s won; check in again", name), retryAfter: s.MinInterval}
	}
	if err != nil {
		return fmt.Errorf("renew the Lease of device %s: %w", name, err)
	}
	return nil
}

func (s *Server) updateLease(ctx context.Context, lease *coordinationv1.Lease, name string, seq uint64, now time.Time) error {
	renew := metav1.NewMicroTime(now)
	lease.Spec.RenewTime = &renew
	lease.Spec.HolderIdentity = &name
	secs := min(s.StaleAfter/time.Second, math.MaxInt32)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(secs)) //nolint:gosec // bounded above
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Annotations[AnnotationSequence] = strconv.FormatUint(seq, 10)
	// An update carries the resourceVersion it read: a compare-and-swap.
	return s.Writer.Update(ctx, lease)
}
