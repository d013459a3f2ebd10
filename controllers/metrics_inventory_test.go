package controllers

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func cond(t string, s metav1.ConditionStatus) metav1.Condition {
	return metav1.Condition{Type: t, Status: s}
}

func TestDeviceComplianceNeedsEveryBaselineFactAndFailsOnAnyFalseOne(t *testing.T) {
	checked, upToDate := itmv1.DeviceConditionCheckedIn, itmv1.DeviceConditionUpToDate
	for name, c := range map[string]struct {
		conds []metav1.Condition
		disk  *bool
		want  string
	}{
		"all true":                {[]metav1.Condition{cond(checked, "True"), cond(upToDate, "True")}, ptr.To(true), Compliant},
		"stale":                   {[]metav1.Condition{cond(checked, "False"), cond(upToDate, "True")}, ptr.To(true), NonCompliant},
		"behind":                  {[]metav1.Condition{cond(checked, "True"), cond(upToDate, "False")}, ptr.To(true), NonCompliant},
		"unencrypted":             {[]metav1.Condition{cond(checked, "True"), cond(upToDate, "True")}, ptr.To(false), NonCompliant},
		"disk unknown":            {[]metav1.Condition{cond(checked, "True"), cond(upToDate, "True")}, nil, Unknown},
		"no conditions yet":       {nil, ptr.To(true), Unknown},
		"check-in Unknown":        {[]metav1.Condition{cond(checked, "Unknown"), cond(upToDate, "True")}, ptr.To(true), Unknown},
		"false wins over unknown": {[]metav1.Condition{cond(upToDate, "False")}, nil, NonCompliant},
	} {
		t.Run(name, func(t *testing.T) {
			seen := metav1.Now()
			d := &itmv1.Device{Status: itmv1.DeviceStatus{Conditions: c.conds, LastCheckIn: &seen, Observed: &itmv1.ObservedFacts{DiskEncrypted: c.disk}}}
			if got := DeviceCompliance(d); got != c.want {
				t.Errorf("got %s, want %s", got, c.want)
			}
		})
	}
}

func TestDeviceComplianceOfADeviceThatNeverCheckedInIsUnknownNotNonCompliant(t *testing.T) {
	d := &itmv1.Device{Status: itmv1.DeviceStatus{
		Conditions: []metav1.Condition{cond(itmv1.DeviceConditionCheckedIn, "False"), cond(itmv1.DeviceConditionUpToDate, "True")},
		Observed:   &itmv1.ObservedFacts{DiskEncrypted: ptr.To(true)},
	}}
	if got := DeviceCompliance(d); got != Unknown {
		t.Errorf("never checked in: got %s, want %s", got, Unknown)
	}
	seen := metav1.Now()
	d.Status.LastCheckIn = &seen
	if got := DeviceCompliance(d); got != NonCompliant {
		t.Errorf("checked in once, now stale: got %s, want %s", got, NonCompliant)
	}
}

func TestCountDevicesGroupsByClassPhaseComplianceCheckInAndUpgrade(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	fresh := []metav1.Condition{cond(itmv1.DeviceConditionCheckedIn, "True"), cond(itmv1.DeviceConditionUpToDate, "True")}
	stale := []metav1.Condition{cond(itmv1.DeviceConditionCheckedIn, "False")}
	devices := []itmv1.Device{
		{Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop}, Status: itmv1.DeviceStatus{Phase: itmv1.DevicePhaseAssigned, Conditions: fresh, LastCheckIn: &now,
			Observed: &itmv1.ObservedFacts{DiskEncrypted: ptr.To(true)}, Upgrade: &itmv1.UpgradeStatus{State: itmv1.UpgradeStateInProgress, Window: "night"}}},
		{Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop}, Status: itmv1.DeviceStatus{Phase: itmv1.DevicePhaseAssigned, Conditions: stale, LastCheckIn: &now}},
		{Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop}, Status: itmv1.DeviceStatus{Phase: itmv1.DevicePhaseAvailable, Conditions: stale}},
		// Retired devices count in itmanager_devices, not in check-ins.
		{Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassServer, Lifecycle: itmv1.DeviceLifecycleRetired}, Status: itmv1.DeviceStatus{Phase: itmv1.DevicePhaseRetired, Conditions: stale, LastCheckIn: &now}},
		// Not reconciled yet.
		{Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassServer}},
	}
	inv := CountDevices(devices)
	for k, want := range map[[3]string]int{
		{"Laptop", "Assigned", Compliant}: 1, {"Laptop", "Assigned", NonCompliant}: 1, {"Laptop", "Available", Unknown}: 1,
		{"Server", "Retired", NonCompliant}: 1, {"Server", Unknown, Unknown}: 1,
	} {
		if inv.Devices[k] != want {
			t.Errorf("devices %v: got %d, want %d", k, inv.Devices[k], want)
		}
	}
	if len(inv.Devices) != 5 {
		t.Errorf("devices: %d series, want 5: %v", len(inv.Devices), inv.Devices)
	}
	wantCheckIns := map[[2]string]int{{"Laptop", CheckInFresh}: 1, {"Laptop", CheckInStale}: 1, {"Laptop", CheckInNever}: 1, {"Server", CheckInNever}: 1}
	if len(inv.CheckIns) != len(wantCheckIns) {
		t.Errorf("check-ins: got %v, want %v", inv.CheckIns, wantCheckIns)
	}
	for k, want := range wantCheckIns {
		if inv.CheckIns[k] != want {
			t.Errorf("check-ins %v: got %d, want %d", k, inv.CheckIns[k], want)
		}
	}
	if len(inv.Upgrades) != 1 || inv.Upgrades[[2]string{"night", "InProgress"}] != 1 {
		t.Errorf("upgrades: %v", inv.Upgrades)
	}
}

func TestCountRequestsReportsAccountsPhasesAndTheOldestOffboarding(t *testing.T) {
	t1 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)
	offboarding := func(since time.Time) itmv1.OnboardingRequest {
		return itmv1.OnboardingRequest{Status: itmv1.OnboardingRequestStatus{Phase: itmv1.OnboardingPhaseOffboarding,
			Conditions: []metav1.Condition{{Type: itmv1.ConditionReady, Status: "False", LastTransitionTime: metav1.NewTime(since)}},
			Accounts:   []itmv1.AccountStatus{{Provider: "ldap", State: itmv1.AccountStateProvisioned}}}}
	}
	reqs := []itmv1.OnboardingRequest{
		offboarding(t2), offboarding(t1),
		{Status: itmv1.OnboardingRequestStatus{Phase: itmv1.OnboardingPhaseActive, Accounts: []itmv1.AccountStatus{
			{Provider: "ldap", State: itmv1.AccountStateProvisioned}, {Provider: "k8s", State: itmv1.AccountStateFailed}}}},
	}
	inv := CountRequests(reqs)
	if inv.Accounts[[2]string{"ldap", "Provisioned"}] != 3 || inv.Accounts[[2]string{"k8s", "Failed"}] != 1 || len(inv.Accounts) != 2 {
		t.Errorf("accounts: %v", inv.Accounts)
	}
	if inv.Phases["Offboarding"] != 2 || inv.Phases["Active"] != 1 {
		t.Errorf("phases: %v", inv.Phases)
	}
	if !inv.OffboardingSince.Equal(t1) {
		t.Errorf("oldest offboarding: got %v, want %v", inv.OffboardingSince, t1)
	}
	if got := CountRequests(reqs[2:]).OffboardingSince; !got.IsZero() {
		t.Errorf("no request offboarding, yet oldest offboarding %v", got)
	}
}

func TestRegisterInventoryReplacesAnEarlierCollectorAndReadsTheCacheAtScrapeTime(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := itmv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	laptop := func(name string) *itmv1.Device {
		return &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop}}
	}
	first := fake.NewClientBuilder().WithScheme(scheme).WithObjects(laptop("a")).Build()
	second := fake.NewClientBuilder().WithScheme(scheme).WithObjects(laptop("b"), laptop("c")).Build()
	for _, c := range []client.Reader{first, second} {
		if err := RegisterInventory(c); err != nil {
			t.Fatal(err)
		}
	}
	count := func() float64 {
		families, err := ctrlmetrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == "itmanager_devices" {
				sum := 0.0
				for _, m := range f.GetMetric() {
					sum += m.GetGauge().GetValue()
				}
				return sum
			}
		}
		return -1
	}
	if got := count(); got != 2 {
		t.Fatalf("itmanager_devices sums to %v, want the second reader's 2", got)
	}
	if err := second.Create(context.Background(), laptop("d")); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != 3 {
		t.Errorf("after a create, itmanager_devices sums to %v, want 3 (read at scrape time)", got)
	}
}

// BenchmarkCountDevices is a scrape's work at 10,000 Devices (the cache
// list itself hands out the cached objects: no copy).
func BenchmarkCountDevices(b *testing.B) {
	now := metav1.Now()
	devices := make([]itmv1.Device, 10000)
	for i := range devices {
		devices[i] = itmv1.Device{Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop}, Status: itmv1.DeviceStatus{Phase: itmv1.DevicePhaseAssigned, LastCheckIn: &now,
			Conditions: []metav1.Condition{cond(itmv1.DeviceConditionCheckedIn, "True"), cond(itmv1.DeviceConditionUpToDate, "True"), cond(itmv1.ConditionReady, "True")},
			Observed:   &itmv1.ObservedFacts{DiskEncrypted: ptr.To(i%2 == 0)}}}
	}
	b.ReportAllocs()
	for b.Loop() {
		CountDevices(devices)
	}
}
