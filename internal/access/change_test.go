package access

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func reported(f itmv1.ObservedFacts) *itmv1.Device {
	d := dev("laptop", "alice", "10.0.0.1")
	d.Status.Observed = &f
	return d
}

func TestReportOnly(t *testing.T) {
	base := itmv1.ObservedFacts{OSVersion: "14.1", Addresses: []string{"10.0.0.9", "10.0.0.8"}}
	tests := map[string]struct {
		change func(d *itmv1.Device)
		want   bool
	}{
		"a reported fact":                  {func(d *itmv1.Device) { d.Status.Observed.OSVersion = "14.2" }, true},
		"disk encryption reported":         {func(d *itmv1.Device) { d.Status.Observed.DiskEncrypted = ptr.To(true) }, true},
		"status beyond observed facts":     {func(d *itmv1.Device) { d.Status.Phase = "Ready" }, true},
		"reported addresses reordered":     {func(d *itmv1.Device) { d.Status.Observed.Addresses = []string{"10.0.0.8", "10.0.0.9"} }, true},
		"a reported address added":         {func(d *itmv1.Device) { d.Status.Observed.Addresses = append(d.Status.Observed.Addresses, "10.0.0.7") }, false},
		"no facts reported any more":       {func(d *itmv1.Device) { d.Status.Observed = nil }, false},
		"a static address":                 {func(d *itmv1.Device) { d.Spec.Addresses = []string{"10.0.0.2"} }, false},
		"the assignee":                     {func(d *itmv1.Device) { d.Spec.Assignee = "bob" }, false},
		"the lifecycle":                    {func(d *itmv1.Device) { d.Spec.Lifecycle = itmv1.DeviceLifecycleLost }, false},
		"a label (a deviceSelector reads)": {func(d *itmv1.Device) { d.Labels = map[string]string{"team": "ops"} }, false},
		"the generation":                   {func(d *itmv1.Device) { d.Generation++ }, false},
		"an owner reference":               {func(d *itmv1.Device) { d.OwnerReferences = []metav1.OwnerReference{{Kind: "Node", Name: "n1"}} }, false},
		"deletion":                         {func(d *itmv1.Device) { d.DeletionTimestamp = ptr.To(metav1.NewTime(now)) }, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			old := reported(base)
			old.Status.Observed.Addresses = []string{"10.0.0.9", "10.0.0.8"}
			cur := old.DeepCopy()
			tc.change(cur)
			if got := ReportOnly(old, cur); got != tc.want {
				t.Errorf("ReportOnly = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestVerdictChanged(t *testing.T) {
	checkIn := now.Add(-time.Minute)
	encrypted, clear := ptr.To(true), ptr.To(false)
	diskOnly := &itmv1.Posture{RequireDiskEncryption: true}
	withCheckIn := &itmv1.Posture{RequireDiskEncryption: true, MaxCheckInAge: &metav1.Duration{Duration: 10 * time.Minute}}
	tests := map[string]struct {
		posture   *itmv1.Posture
		old, cur  itmv1.ObservedFacts
		conflicts map[string][]string
		want      bool
	}{
		"a fact the posture ignores, allowed":        {diskOnly, itmv1.ObservedFacts{DiskEncrypted: encrypted, OSVersion: "1"}, itmv1.ObservedFacts{DiskEncrypted: encrypted, OSVersion: "2"}, nil, false},
		"a fact the posture ignores, denied":         {diskOnly, itmv1.ObservedFacts{DiskEncrypted: clear, OSVersion: "1"}, itmv1.ObservedFacts{DiskEncrypted: clear, OSVersion: "2"}, nil, false},
		"any fact, no posture":                       {nil, itmv1.ObservedFacts{Hostname: "a"}, itmv1.ObservedFacts{Hostname: "b"}, nil, false},
		"encryption lost: denied":                    {diskOnly, itmv1.ObservedFacts{DiskEncrypted: encrypted}, itmv1.ObservedFacts{DiskEncrypted: clear}, nil, true},
		"encryption reported: allowed":               {diskOnly, itmv1.ObservedFacts{}, itmv1.ObservedFacts{DiskEncrypted: encrypted}, nil, true},
		"denied for another reason (unknown → off)":  {diskOnly, itmv1.ObservedFacts{}, itmv1.ObservedFacts{DiskEncrypted: clear}, nil, true},
		"a reported address usable now":              {nil, itmv1.ObservedFacts{}, itmv1.ObservedFacts{Addresses: []string{"10.0.0.5"}}, nil, true},
		"same verdict with a check-in requirement":   {withCheckIn, itmv1.ObservedFacts{DiskEncrypted: encrypted, OSVersion: "1"}, itmv1.ObservedFacts{DiskEncrypted: encrypted, OSVersion: "2"}, nil, false},
		"allowed with a check-in: expiry now counts": {withCheckIn, itmv1.ObservedFacts{DiskEncrypted: clear}, itmv1.ObservedFacts{DiskEncrypted: encrypted}, nil, true},
		"an ignored fact of a conflicting device":    {diskOnly, itmv1.ObservedFacts{DiskEncrypted: encrypted, OSVersion: "1"}, itmv1.ObservedFacts{DiskEncrypted: encrypted, OSVersion: "2"}, map[string][]string{"10.0.0.1": {"other"}}, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := Candidate{Device: reported(tc.old), LastCheckIn: &checkIn, Conflicts: tc.conflicts}
			after := before
			after.Device = reported(tc.cur)
			if got := VerdictChanged(before, after, tc.posture, now); got != tc.want {
				t.Errorf("VerdictChanged = %v, want %v", got, tc.want)
			}
		})
	}
}
