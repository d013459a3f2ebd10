package controllers

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// Compliance values of itmanager_devices (docs/metrics.md defines them).
const (
	Compliant    = "compliant"
	NonCompliant = "non-compliant"
	Unknown      = "unknown"
)

// Check-in states of itmanager_devices_checkin.
const (
	CheckInFresh = "fresh"
	CheckInStale = "stale"
	CheckInNever = "never"
)

var (
	devicesDesc = prometheus.NewDesc("itmanager_devices",
		"Devices by class, phase and baseline compliance (compliant: checked in, up to date and disk encrypted; non-compliant: one of them known false; unknown: otherwise).",
		[]string{"class", "phase", "compliance"}, nil)
	devicesCheckInDesc = prometheus.NewDesc("itmanager_devices_checkin",
		"Active devices by class and check-in state (fresh: CheckedIn True; stale: CheckedIn False after a check-in; never: no check-in yet).",
		[]string{"class", "state"}, nil)
	upgradesDesc = prometheus.NewDesc("itmanager_device_upgrades",
		"Devices by the MaintenanceWindow and state of their status.upgrade.",
		[]string{"window", "state"}, nil)
	accountsDesc = prometheus.NewDesc("itmanager_accounts",
		"Accounts recorded in OnboardingRequest status, by AccountProvider and state.",
		[]string{"provider", "state"}, nil)
	requestsDesc = prometheus.NewDesc("itmanager_onboarding_requests",
		"OnboardingRequests by phase.",
		[]string{"phase"}, nil)
	offboardingSinceDesc = prometheus.NewDesc("itmanager_onboarding_offboarding_oldest_timestamp_seconds",
		"Since when the longest-offboarding request has been in phase Offboarding (its Ready condition's last transition), as a Unix time; absent when none is.",
		nil, nil)
	windowDegradedDesc = prometheus.NewDesc("itmanager_maintenancewindow_degraded",
		"1 while a MaintenanceWindow's Degraded condition is True, by its reason (FailureBudgetExhausted, DrainBlockedByPDB).",
		[]string{"window", "reason"}, nil)
	inventoryErrorsDesc = prometheus.NewDesc("itmanager_inventory_scrape_errors",
		"1 when the last scrape could not read a kind from the informer cache (its gauges are then missing), by kind.",
		[]string{"kind"}, nil)
)

// scrapeTimeout bounds one scrape's reads of the cache, which block until
// the cache has synced.
const scrapeTimeout = 5 * time.Second

// InventoryCollector counts objects in the manager's informer cache at
// scrape time, so the counts are over all objects, cost nothing between
// scrapes and never go stale on a replica that is not the leader.
type InventoryCollector struct {
	// Reader is the manager's cache.
	Reader client.Reader
}

// RegisterInventory registers an InventoryCollector of reader in
// controller-runtime's metrics registry, in place of an earlier one.
func RegisterInventory(reader client.Reader) error {
	return Replace(&InventoryCollector{Reader: reader})
}

// Replace registers c in controller-runtime's metrics registry, replacing
// a collector of the same metrics registered before (a manager set up
// again in the same process), so the latest one's sources are read.
func Replace(c prometheus.Collector) error {
	err := ctrlmetrics.Registry.Register(c)
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		ctrlmetrics.Registry.Unregister(are.ExistingCollector)
		err = ctrlmetrics.Registry.Register(c)
	}
	return err
}

// Describe implements prometheus.Collector.
func (c *InventoryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{devicesDesc, devicesCheckInDesc, upgradesDesc, accountsDesc, requestsDesc,
		offboardingSinceDesc, windowDegradedDesc, inventoryErrorsDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *InventoryCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	// The cache hands out its own objects: read only, never kept.
	unsafe := client.UnsafeDisableDeepCopy

	failed := func(kind string, err error) {
		v := 0.0
		if err != nil {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(inventoryErrorsDesc, prometheus.GaugeValue, v, kind)
	}

	devices := &itmv1.DeviceList{}
	err := c.Reader.List(ctx, devices, unsafe)
	failed("Device", err)
	if err == nil {
		inv := CountDevices(devices.Items)
		for k, n := range inv.Devices {
			ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(n), k[0], k[1], k[2])
		}
		for k, n := range inv.CheckIns {
			ch <- prometheus.MustNewConstMetric(devicesCheckInDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
		}
		for k, n := range inv.Upgrades {
			ch <- prometheus.MustNewConstMetric(upgradesDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
		}
	}

	requests := &itmv1.OnboardingRequestList{}
	err = c.Reader.List(ctx, requests, unsafe)
	failed("OnboardingRequest", err)
	if err == nil {
		inv := CountRequests(requests.Items)
		for k, n := range inv.Accounts {
			ch <- prometheus.MustNewConstMetric(accountsDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
		}
		for phase, n := range inv.Phases {
			ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.GaugeValue, float64(n), phase)
		}
		if !inv.OffboardingSince.IsZero() {
			ch <- prometheus.MustNewConstMetric(offboardingSinceDesc, prometheus.GaugeValue, float64(inv.OffboardingSince.Unix()))
		}
	}

	windows := &itmv1.MaintenanceWindowList{}
	err = c.Reader.List(ctx, windows, unsafe)
	failed("MaintenanceWindow", err)
	if err == nil {
		for i := range windows.Items {
			mw := &windows.Items[i]
			if cond := meta.FindStatusCondition(mw.Status.Conditions, itmv1.MaintenanceConditionDegraded); cond != nil && cond.Status == metav1.ConditionTrue {
				ch <- prometheus.MustNewConstMetric(windowDegradedDesc, prometheus.GaugeValue, 1, mw.Name, cond.Reason)
			}
		}
	}
}

// DeviceInventory is what itmanager_devices, itmanager_devices_checkin and
// itmanager_device_upgrades report.
type DeviceInventory struct {
	// Devices by class, phase, compliance.
	Devices map[[3]string]int
	// CheckIns of Active devices by class, check-in state.
	CheckIns map[[2]string]int
	// Upgrades by window, state.
	Upgrades map[[2]string]int
}

// CountDevices counts devices for the inventory gauges.
func CountDevices(devices []itmv1.Device) DeviceInventory {
	inv := DeviceInventory{Devices: map[[3]string]int{}, CheckIns: map[[2]string]int{}, Upgrades: map[[2]string]int{}}
	for i := range devices {
		d := &devices[i]
		class := string(d.Spec.Class)
		phase := string(d.Status.Phase)
		if phase == "" {
			phase = Unknown // not reconciled yet
		}
		inv.Devices[[3]string{class, phase, DeviceCompliance(d)}]++
		if d.Spec.Lifecycle == "" || d.Spec.Lifecycle == itmv1.DeviceLifecycleActive {
			inv.CheckIns[[2]string{class, checkInState(d)}]++
		}
		if u := d.Status.Upgrade; u != nil && u.State != "" {
			inv.Upgrades[[2]string{u.Window, string(u.State)}]++
		}
	}
	return inv
}

// DeviceCompliance is a device's baseline compliance, independent of any
// AccessPolicy's posture: compliant when it checked in recently (CheckedIn
// True), runs its target version (UpToDate True) and reports an encrypted
// disk; non-compliant when any of these is known to be false (a device that
// checked in once and went stale included); unknown otherwise (never
// checked in, no disk fact, conditions not yet set).
func DeviceCompliance(d *itmv1.Device) string {
	checkedIn := conditionFact(d.Status.Conditions, itmv1.DeviceConditionCheckedIn)
	if d.Status.LastCheckIn == nil {
		// Never reported: CheckedIn False says "no check-in", which is
		// not knowing the device's state, not knowing it is bad.
		checkedIn = nil
	}
	facts := []*bool{
		checkedIn,
		conditionFact(d.Status.Conditions, itmv1.DeviceConditionUpToDate),
		nil,
	}
	if d.Status.Observed != nil {
		facts[2] = d.Status.Observed.DiskEncrypted
	}
	verdict := Compliant
	for _, f := range facts {
		switch {
		case f != nil && !*f:
			return NonCompliant
		case f == nil:
			verdict = Unknown
		}
	}
	return verdict
}

// conditionFact is a condition as a fact: nil when absent or Unknown.
func conditionFact(conds []metav1.Condition, t string) *bool {
	c := meta.FindStatusCondition(conds, t)
	if c == nil || c.Status == metav1.ConditionUnknown {
		return nil
	}
	v := c.Status == metav1.ConditionTrue
	return &v
}

func checkInState(d *itmv1.Device) string {
	switch f := conditionFact(d.Status.Conditions, itmv1.DeviceConditionCheckedIn); {
	case f != nil && *f:
		return CheckInFresh
	case d.Status.LastCheckIn == nil:
		return CheckInNever
	default:
		return CheckInStale
	}
}

// RequestInventory is what itmanager_accounts, itmanager_onboarding_requests
// and itmanager_onboarding_offboarding_oldest_timestamp_seconds report.
type RequestInventory struct {
	// Accounts by provider, state.
	Accounts map[[2]string]int
	// Phases counts requests by phase.
	Phases map[string]int
	// OffboardingSince is the earliest start of a request still in phase
	// Offboarding; zero when none is.
	OffboardingSince time.Time
}

// CountRequests counts OnboardingRequests for the inventory gauges.
func CountRequests(requests []itmv1.OnboardingRequest) RequestInventory {
	inv := RequestInventory{Accounts: map[[2]string]int{}, Phases: map[string]int{}}
	for i := range requests {
		r := &requests[i]
		for _, a := range r.Status.Accounts {
			inv.Accounts[[2]string{a.Provider, string(a.State)}]++
		}
		if r.Status.Phase == "" {
			continue
		}
		inv.Phases[string(r.Status.Phase)]++
		if r.Status.Phase != itmv1.OnboardingPhaseOffboarding {
			continue
		}
		since := r.CreationTimestamp.Time
		if c := meta.FindStatusCondition(r.Status.Conditions, itmv1.ConditionReady); c != nil {
			since = c.LastTransitionTime.Time
		}
		if inv.OffboardingSince.IsZero() || since.Before(inv.OffboardingSince) {
			inv.OffboardingSince = since
		}
	}
	return inv
}
