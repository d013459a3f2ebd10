package controllers

import (
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

func init() {
	ctrlmetrics.Registry.MustRegister(policyDevices, policyAddressBlocks, windowOpen, windowDevices, joiners, leavers, provisioningErrors)
}

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
