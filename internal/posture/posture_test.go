package posture

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var now = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

func laptop(mut ...func(*itmv1.Device)) *itmv1.Device {
	d := &itmv1.Device{
		ObjectMeta: metav1.ObjectMeta{Name: "lt-1"},
		Spec: itmv1.DeviceSpec{
			Class: itmv1.DeviceClassLaptop, Lifecycle: itmv1.DeviceLifecycleActive,
			OS: &itmv1.OSSpec{Family: itmv1.OSFamilyMacOS, TargetVersion: "14.2.1"},
		},
		Status: itmv1.DeviceStatus{Observed: &itmv1.ObservedFacts{
			OSVersion: "14.2.1", DiskEncrypted: ptr.To(true), Attributes: map[string]string{"site": "berlin"},
		}},
	}
	for _, m := range mut {
		m(d)
	}
	return d
}

func at(d time.Duration) *time.Time { t := now.Add(d); return &t }

func TestEvaluate(t *testing.T) {
	full := &itmv1.Posture{
		MaxCheckInAge:         &metav1.Duration{Duration: 15 * time.Minute},
		RequireUpToDate:       true,
		RequireDiskEncryption: true,
		MinOSVersions:         map[itmv1.OSFamily]string{itmv1.OSFamilyMacOS: "14.2", itmv1.OSFamilyLinux: "6.1"},
		RequiredAttributes:    map[string]string{"site": "berlin"},
	}
	tests := map[string]struct {
		dev       *itmv1.Device
		posture   *itmv1.Posture
		checkIn   *time.Time
		allowed   bool
		reasons   []string
		expiresAt time.Time
	}{
		"no posture: an Active device passes": {dev: laptop(), allowed: true},
		"no posture: a Lost device fails": {
			dev:     laptop(func(d *itmv1.Device) { d.Spec.Lifecycle = itmv1.DeviceLifecycleLost }),
			reasons: []string{"device is Lost"},
		},
		"everything met": {
			dev: laptop(), posture: full, checkIn: at(-time.Minute), allowed: true,
			expiresAt: now.Add(14 * time.Minute),
		},
		"never checked in": {
			dev: laptop(), posture: full, reasons: []string{"no check-in recorded"},
		},
		"check-in exactly maxCheckInAge ago fails": {
			dev: laptop(), posture: full, checkIn: at(-15 * time.Minute),
			reasons: []string{"last check-in 2026-11-21T09:45:00Z is older than 15m0s"},
		},
		"check-in one nanosecond short of the limit passes": {
			dev: laptop(), posture: full, checkIn: at(-15*time.Minute + time.Nanosecond), allowed: true,
			expiresAt: now.Add(time.Nanosecond),
		},
		"check-in far in the future is ignored": {
			dev: laptop(), posture: full, checkIn: at(time.Hour),
			reasons: []string{"last check-in 2026-11-21T11:00:00Z lies in the future"},
		},
		"small clock skew is tolerated": {
			dev: laptop(), posture: full, checkIn: at(2 * time.Second), allowed: true,
			expiresAt: now.Add(15*time.Minute + 2*time.Second),
		},
		"facts unknown: every requirement fails, all reported": {
			dev: laptop(func(d *itmv1.Device) { d.Status.Observed = nil }), posture: full, checkIn: at(0),
			reasons: []string{
				"OS version unknown (target 14.2.1)",
				"disk encryption unknown",
				"OS version unknown (minimum macOS 14.2)",
				`attribute site unknown (want "berlin")`,
			},
			expiresAt: now.Add(15 * time.Minute),
		},
		"disk not encrypted": {
			dev:     laptop(func(d *itmv1.Device) { d.Status.Observed.DiskEncrypted = ptr.To(false) }),
			posture: &itmv1.Posture{RequireDiskEncryption: true}, reasons: []string{"disk not encrypted"},
		},
		"not the target version": {
			dev:     laptop(func(d *itmv1.Device) { d.Status.Observed.OSVersion = "14.2.0" }),
			posture: &itmv1.Posture{RequireUpToDate: true}, reasons: []string{"OS version 14.2.0 is not the target 14.2.1"},
		},
		"no target version means up to date": {
			dev:     laptop(func(d *itmv1.Device) { d.Spec.OS.TargetVersion = "" }),
			posture: &itmv1.Posture{RequireUpToDate: true}, allowed: true,
		},
		"versions compare numerically, not as strings": {
			dev:     laptop(func(d *itmv1.Device) { d.Status.Observed.OSVersion = "14.10" }),
			posture: &itmv1.Posture{MinOSVersions: map[itmv1.OSFamily]string{itmv1.OSFamilyMacOS: "14.9"}}, allowed: true,
		},
		"older version fails": {
			dev:     laptop(func(d *itmv1.Device) { d.Status.Observed.OSVersion = "13.6.9" }),
			posture: &itmv1.Posture{MinOSVersions: map[itmv1.OSFamily]string{itmv1.OSFamilyMacOS: "14"}},
			reasons: []string{"macOS 13.6.9 is older than the minimum 14"},
		},
		"kernel-style version uses its numeric head": {
			dev: laptop(func(d *itmv1.Device) {
				d.Spec.OS.Family = itmv1.OSFamilyLinux
				d.Status.Observed.OSVersion = "6.8.0-45-generic"
			}),
			posture: &itmv1.Posture{MinOSVersions: map[itmv1.OSFamily]string{itmv1.OSFamilyLinux: "6.8"}}, allowed: true,
		},
		"a version that is not dotted is unknown": {
			dev: laptop(func(d *itmv1.Device) {
				d.Spec.OS.Family = itmv1.OSFamilyLinux
				d.Status.Observed.OSVersion = "Ubuntu 24.04.1 LTS"
			}),
			posture: &itmv1.Posture{MinOSVersions: map[itmv1.OSFamily]string{itmv1.OSFamilyLinux: "6.8"}},
			reasons: []string{`OS version "Ubuntu 24.04.1 LTS" is not a dotted version (minimum Linux 6.8)`},
		},
		"family must match": {
			dev:     laptop(),
			posture: &itmv1.Posture{MinOSVersions: map[itmv1.OSFamily]string{itmv1.OSFamilyWindows: "10", itmv1.OSFamilyLinux: "6"}},
			reasons: []string{"OS family macOS is not allowed (allowed: Linux, Windows)"},
		},
		"family unknown": {
			dev:     laptop(func(d *itmv1.Device) { d.Spec.OS = nil }),
			posture: &itmv1.Posture{MinOSVersions: map[itmv1.OSFamily]string{itmv1.OSFamilyLinux: "6"}},
			reasons: []string{"OS family unknown"},
		},
		"attribute differs": {
			dev:     laptop(),
			posture: &itmv1.Posture{RequiredAttributes: map[string]string{"site": "paris", "mdm": "enrolled"}},
			reasons: []string{`attribute mdm unknown (want "enrolled")`, `attribute site is "berlin", not "paris"`},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := Evaluate(Input{Device: tc.dev, Posture: tc.posture, LastCheckIn: tc.checkIn, Now: now})
			if r.Allowed() != tc.allowed {
				t.Errorf("Allowed() = %v, want %v (checks %+v)", r.Allowed(), tc.allowed, r.Checks)
			}
			if got := strings.Join(r.Reasons(), "|"); got != strings.Join(tc.reasons, "|") {
				t.Errorf("Reasons() = %q\nwant       %q", r.Reasons(), tc.reasons)
			}
			if !r.ExpiresAt.Equal(tc.expiresAt) {
				t.Errorf("ExpiresAt = %v, want %v", r.ExpiresAt, tc.expiresAt)
			}
		})
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1", "1", 0}, {"14.2", "14.2.0", 0}, {"14.10", "14.9", 1}, {"2", "10", -1},
		{"01.2", "1.2", 0}, {"0", "0.0.0", 0}, {"1.0.1", "1", 1},
		{"99999999999999999999999.1", "99999999999999999999998.9", 1},
	}
	for _, tc := range tests {
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := CompareVersions(tc.b, tc.a); got != -tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

func TestReasonsAreBounded(t *testing.T) {
	d := laptop(func(d *itmv1.Device) { d.Status.Observed.Attributes["k"] = strings.Repeat("é", 300) })
	r := Evaluate(Input{Device: d, Posture: &itmv1.Posture{RequiredAttributes: map[string]string{"k": "x"}}, Now: now})
	reason := r.Reasons()[0]
	if len([]rune(reason)) > MaxReason || !strings.HasSuffix(reason, "...") || !utf8Valid(reason) {
		t.Fatalf("reason not bounded to valid UTF-8: %d runes", len([]rune(reason)))
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }
