// Package posture decides whether a device meets an AccessPolicy's posture
// requirements, and says why not in words that do not go stale: a reason
// names absolute times, never "3h ago", so a status holding it need not be
// rewritten as time passes. Unknown facts fail. The clock is an input.
package posture

import (
	"fmt"
	"slices"
	"strings"
	"time"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/text"
)

// Requirement names, as `kubectl itm why` prints them.
const (
	RequireLifecycle      = "lifecycle"
	RequireCheckIn        = "maxCheckInAge"
	RequireUpToDate       = "requireUpToDate"
	RequireDiskEncryption = "requireDiskEncryption"
	RequireOSVersion      = "minOSVersions"
	RequireAttribute      = "requiredAttributes"
)

// MaxReason bounds one reason (the API allows 256 characters).
const MaxReason = 256

// Input is everything a posture verdict depends on.
type Input struct {
	Device *itmv1.Device
	// Posture is the policy's requirements; nil requires only an Active device.
	Posture *itmv1.Posture
	// LastCheckIn is the live check-in (the renew time of the device's Lease);
	// nil when the device never checked in.
	LastCheckIn *time.Time
	Now         time.Time
}

// Check is the verdict on one requirement.
type Check struct {
	// Requirement is the spec field, e.g. "maxCheckInAge" or
	// "requiredAttributes[site]".
	Requirement string
	Passed      bool
	// Detail says what was found, e.g. "last check-in 2026-11-21T10:00:00Z
	// is older than 15m" or "disk encrypted".
	Detail string
}

// Result is the verdict on a device.
type Result struct {
	Checks []Check
	// ExpiresAt is when the device stops meeting maxCheckInAge if it does not
	// check in again; zero when no such requirement applies or it fails now.
	ExpiresAt time.Time
}

// Allowed reports whether every requirement passed.
func (r Result) Allowed() bool {
	return !slices.ContainsFunc(r.Checks, func(c Check) bool { return !c.Passed })
}

// Reasons are the details of the failed requirements, in order.
func (r Result) Reasons() []string {
	var out []string
	for _, c := range r.Checks {
		if !c.Passed {
			out = append(out, c.Detail)
		}
	}
	return out
}

// Evaluate checks the device against every requirement, in the order of the
// spec, and never stops at the first failure, so a person sees everything
// they need to fix.
func Evaluate(in Input) Result {
	d := in.Device
	var r Result
	add := func(req string, ok bool, format string, args ...any) {
		r.Checks = append(r.Checks, Check{Requirement: req, Passed: ok, Detail: text.Truncate(fmt.Sprintf(format, args...), MaxReason)})
	}

	if device.Active(d) {
		add(RequireLifecycle, true, "device is Active")
	} else {
		add(RequireLifecycle, false, "device is %s", d.Spec.Lifecycle)
	}

	p := in.Posture
	if p == nil {
		return r
	}
	observed := d.Status.Observed
	if observed == nil {
		observed = &itmv1.ObservedFacts{}
	}

	if p.MaxCheckInAge != nil {
		maxAge := p.MaxCheckInAge.Duration
		last := in.LastCheckIn
		switch verdict, expires := device.JudgeCheckIn(last, maxAge, in.Now); verdict {
		case device.NeverCheckedIn:
			add(RequireCheckIn, false, "no check-in recorded")
		case device.CheckInInFuture:
			add(RequireCheckIn, false, "last check-in %s lies in the future", stamp(*last))
		case device.CheckInStale:
			add(RequireCheckIn, false, "last check-in %s is older than %s", stamp(*last), maxAge)
		default:
			r.ExpiresAt = expires
			add(RequireCheckIn, true, "last check-in %s is within %s", stamp(*last), maxAge)
		}
	}

	if p.RequireUpToDate {
		target := ""
		if d.Spec.OS != nil {
			target = d.Spec.OS.TargetVersion
		}
		switch {
		case target == "":
			add(RequireUpToDate, true, "no target version set")
		case observed.OSVersion == "":
			add(RequireUpToDate, false, "OS version unknown (target %s)", target)
		case observed.OSVersion != target:
			add(RequireUpToDate, false, "OS version %s is not the target %s", observed.OSVersion, target)
		default:
			add(RequireUpToDate, true, "OS version %s is the target", target)
		}
	}

	if p.RequireDiskEncryption {
		switch e := observed.DiskEncrypted; {
		case e == nil:
			add(RequireDiskEncryption, false, "disk encryption unknown")
		case !*e:
			add(RequireDiskEncryption, false, "disk not encrypted")
		default:
			add(RequireDiskEncryption, true, "disk encrypted")
		}
	}

	if len(p.MinOSVersions) > 0 {
		r.Checks = append(r.Checks, osVersionCheck(d, observed, p.MinOSVersions))
	}

	keys := make([]string, 0, len(p.RequiredAttributes))
	for k := range p.RequiredAttributes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		want := p.RequiredAttributes[k]
		req := RequireAttribute + "[" + k + "]"
		got, ok := observed.Attributes[k]
		switch {
		case !ok:
			add(req, false, "attribute %s unknown (want %q)", k, want)
		case got != want:
			add(req, false, "attribute %s is %q, not %q", k, got, want)
		default:
			add(req, true, "attribute %s is %q", k, want)
		}
	}
	return r
}

func osVersionCheck(d *itmv1.Device, observed *itmv1.ObservedFacts, mins map[itmv1.OSFamily]string) Check {
	c := Check{Requirement: RequireOSVersion}
	var family itmv1.OSFamily
	if d.Spec.OS != nil {
		family = d.Spec.OS.Family
	}
	minimum, ok := mins[family]
	switch {
	case family == "":
		c.Detail = "OS family unknown"
	case !ok:
		c.Detail = fmt.Sprintf("OS family %s is not allowed (allowed: %s)", family, familyList(mins))
	case observed.OSVersion == "":
		c.Detail = fmt.Sprintf("OS version unknown (minimum %s %s)", family, minimum)
	default:
		v, ok := leadingVersion(observed.OSVersion)
		switch {
		case !ok:
			c.Detail = fmt.Sprintf("OS version %q is not a dotted version (minimum %s %s)", observed.OSVersion, family, minimum)
		case CompareVersions(v, minimum) < 0:
			c.Detail = fmt.Sprintf("%s %s is older than the minimum %s", family, observed.OSVersion, minimum)
		default:
			c.Passed = true
			c.Detail = fmt.Sprintf("%s %s is at least %s", family, observed.OSVersion, minimum)
		}
	}
	c.Detail = text.Truncate(c.Detail, MaxReason)
	return c
}

func familyList(m map[itmv1.OSFamily]string) string {
	fs := make([]string, 0, len(m))
	for f := range m {
		fs = append(fs, string(f))
	}
	slices.Sort(fs)
	return strings.Join(fs, ", ")
}

// leadingVersion is the dotted numeric version a reported version starts
// with: "6.8.0-45-generic" → "6.8.0", "14.2.1" → "14.2.1". A version that
// does not start with a digit ("Ubuntu 24.04") has none: it is unknown.
func leadingVersion(s string) (string, bool) {
	end := 0
	for end < len(s) && (s[end] >= '0' && s[end] <= '9' || s[end] == '.' && end > 0 && s[end-1] != '.') {
		end++
	}
	v := strings.TrimSuffix(s[:end], ".")
	return v, v != ""
}

// CompareVersions compares dotted numeric versions segment by segment as
// numbers of any size; a missing segment is 0, so 14.2 == 14.2.0.
func CompareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		var x, y string
		if i < len(as) {
			x = strings.TrimLeft(as[i], "0")
		}
		if i < len(bs) {
			y = strings.TrimLeft(bs[i], "0")
		}
		if c := len(x) - len(y); c != 0 {
			return sign(c)
		}
		if c := strings.Compare(x, y); c != 0 {
			return c
		}
	}
	return 0
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
