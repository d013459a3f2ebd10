package controllers

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// Gauges mirror what the status of each AccessPolicy and MaintenanceWindow
// says, so dashboards and alerts need no API access: devices denied access,
// a rollout stuck or failing.
var (
	policyDevices = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "itmanager_accesspolicy_devices",
		Help: "Devices an AccessPolicy matched, by verdict (allowed, denied).",
	}, []string{"policy", "verdict"})
	policyAddressBlocks = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "itmanager_accesspolicy_address_blocks",
		Help: "CIDRs in the NetworkPolicies an AccessPolicy generates.",
	}, []string{"policy"})
	windowOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "itmanager_maintenancewindow_open",
		Help: "1 while a MaintenanceWindow is open (inside a window, no blackout), else 0.",
	}, []string{"window"})
	windowDevices = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "itmanager_maintenancewindow_devices",
		Help: "Devices of a MaintenanceWindow's current (or last) window, by state (pending, inProgress, succeeded, failed).",
	}, []string{"window", "state"})
)

// Counters of people joining and leaving, and of account operations that
// failed, by AccountProvider.
var (
	joiners = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "itmanager_onboarding_joiners_total",
		Help: "OnboardingRequests that became Active.",
	})
	leavers = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "itmanager_onboarding_leavers_total",
		Help: "OnboardingRequests that finished offboarding.",
	})
	provisioningErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "itmanager_onboarding_provisioning_errors_total",
		Help: "Account operations that failed, by AccountProvider.",
	}, []string{"provider"})
)

// propagationSeconds is how long a Device or Lease change the AccessPolicy
// controller observed took to reach the policy's NetworkPolicies.
var propagationSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
	Name: "itmanager_access_propagation_seconds",
	Help: "From a Device or check-in Lease change the AccessPolicy controller observed to the end of the reconcile that made the policy's NetworkPolicies match it.",
	// A posture change must arrive within a second (DESIGN §6).
	Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
})

func init() {
	ctrlmetrics.Registry.MustRegister(policyDevices, policyAddressBlocks, windowOpen, windowDevices, joiners, leavers, provisioningErrors,
		propagationSeconds)
}

// pendingChanges remembers, per AccessPolicy, when the first change that
// enqueued it and has not been enforced yet was observed.
type pendingChanges struct {
	mu    sync.Mutex
	since map[string]time.Time
}

// observe records a change of policy seen at t, unless an earlier one is
// still pending.
func (p *pendingChanges) observe(policy string, t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.since == nil {
		p.since = map[string]time.Time{}
	}
	if _, ok := p.since[policy]; !ok {
		p.since[policy] = t
	}
}

// take returns and forgets the pending change of policy.
func (p *pendingChanges) take(policy string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.since[policy]
	delete(p.since, policy)
	return t, ok
}

// putBack restores a change take returned whose reconcile failed, unless a
// later change is pending (the earlier time is kept).
func (p *pendingChanges) putBack(policy string, t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.since[policy]; !ok || t.Before(cur) {
		if p.since == nil {
			p.since = map[string]time.Time{}
		}
		p.since[policy] = t
	}
}

// initProvider creates the provider's provisioning error series at 0, so
// that increase() sees its first error.
func initProvider(name string) { provisioningErrors.WithLabelValues(name) }

func forgetProvider(name string) { provisioningErrors.DeleteLabelValues(name) }

func recordPolicy(p *itmv1.AccessPolicy) {
	policyDevices.WithLabelValues(p.Name, "allowed").Set(float64(p.Status.Devices.Allowed))
	policyDevices.WithLabelValues(p.Name, "denied").Set(float64(p.Status.Devices.Denied))
	policyAddressBlocks.WithLabelValues(p.Name).Set(float64(p.Status.AddressBlocks))
}

func forgetPolicy(name string) {
	policyDevices.DeletePartialMatch(prometheus.Labels{"policy": name})
	policyAddressBlocks.DeleteLabelValues(name)
}

func recordWindow(mw *itmv1.MaintenanceWindow) {
	open := 0.0
	if mw.Status.WindowOpen {
		open = 1
	}
	windowOpen.WithLabelValues(mw.Name).Set(open)
	d := mw.Status.Devices
	for state, n := range map[string]int32{"pending": d.Pending, "inProgress": d.InProgress, "succeeded": d.Succeeded, "failed": d.Failed} {
		windowDevices.WithLabelValues(mw.Name, state).Set(float64(n))
	}
}

func forgetWindow(name string) {
	windowOpen.DeleteLabelValues(name)
	windowDevices.DeletePartialMatch(prometheus.Labels{"window": name})
}
