// Package device decides a Device's derived status: phase, freshness of its
// check-ins, whether it runs its target version, and when to look again. It
// is pure: the clock is an input.
package device

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/kit"
	"github.com/itmanager-io/itmanager/internal/text"
)

// MaxClockSkew is how far in the future a Lease renew time may lie and still
// count: replicas of the check-in service renew Leases with their own clocks.
// A renew time further ahead is ignored, so nobody can keep a device fresh by
// writing a time to come.
const MaxClockSkew = 5 * time.Second

// Input is everything the status of one Device depends on.
type Input struct {
	Device *itmv1.Device
	// RenewTime is the live check-in: the renew time of the device's Lease
	// (its agent Lease, or its Node's Lease in kube-node-lease); nil when it
	// never checked in.
	RenewTime *time.Time
	// NodeFacts replaces status.observed for the Device Node discovery made
	// for its Node (OwnedByNode); nil for others, whose facts the check-in
	// service writes. A Device that merely names a Node never gets them.
	NodeFacts *itmv1.ObservedFacts
	// AddressRanges are the manager's --agent-address-cidrs (empty: any);
	// addresses outside them do not count (Addresses) and Ready says so.
	AddressRanges []netip.Prefix
	// Conflicts are the device's addresses that other Devices claim too,
	// each mapped to the sorted names of those Devices.
	Conflicts map[string][]string
	Now       time.Time
	// StaleAfter is the CheckedIn threshold.
	StaleAfter time.Duration
	// RefreshEvery bounds how often status.lastCheckIn is rewritten while
	// CheckedIn does not change.
	RefreshEvery time.Duration
	// Unenrolled says why the agent of a device with spec.agent.enabled is
	// not enrolled yet (its Lease is missing or carries no token hash);
	// empty when it is, or when the device has no agent. The enrolment
	// controller finishes it by itself: Ready=False and Reconciling.
	Unenrolled string
	// EnrolmentConflict says why the agent can never be enrolled as things
	// stand (its enrolment Secret's name is held by a Secret itmanager did
	// not create); empty otherwise. Only a person fixes it: Stalled.
	EnrolmentConflict string
}

// Result is the status a Device should have and when to evaluate it again.
type Result struct {
	Status itmv1.DeviceStatus
	// RequeueAfter is when CheckedIn will turn False if no check-in comes
	// (zero when nothing is scheduled).
	RequeueAfter time.Duration
}

// ExpectsCheckIns reports whether the device is supposed to check in: it runs
// an agent, or it is a Node (whose kubelet renews its Lease).
func ExpectsCheckIns(d *itmv1.Device) bool {
	return d.Spec.Class == itmv1.DeviceClassNode || (d.Spec.Agent != nil && d.Spec.Agent.Enabled)
}

// Phase derives the phase from the spec.
func Phase(d *itmv1.Device) itmv1.DevicePhase {
	switch {
	case d.Spec.Lifecycle == itmv1.DeviceLifecycleRetired:
		return itmv1.DevicePhaseRetired
	case d.Spec.Lifecycle == itmv1.DeviceLifecycleLost:
		return itmv1.DevicePhaseLost
	case d.Spec.Assignee != "":
		return itmv1.DevicePhaseAssigned
	default:
		return itmv1.DevicePhaseAvailable
	}
}

// Evaluate computes the status of in.Device. Conditions keep their
// lastTransitionTime unless their status changes.
func Evaluate(in Input) Result {
	d := in.Device
	st := *d.Status.DeepCopy()
	st.ObservedGeneration = d.Generation
	st.Phase = Phase(d)
	if in.NodeFacts != nil {
		st.Observed = in.NodeFacts.DeepCopy()
	}
	now := metav1.NewTime(in.Now)
	set := func(c metav1.Condition) {
		c.ObservedGeneration = d.Generation
		c.LastTransitionTime = now
		meta.SetStatusCondition(&st.Conditions, c)
	}

	// The effective check-in: the Lease, unless it has none or claims a
	// time to come; then the last one recorded.
	checkIn := in.RenewTime
	verdict, expires := JudgeCheckIn(checkIn, in.StaleAfter, in.Now)
	if verdict == NeverCheckedIn || verdict == CheckInInFuture {
		checkIn, verdict, expires = nil, NeverCheckedIn, time.Time{}
		if st.LastCheckIn != nil {
			checkIn = &st.LastCheckIn.Time
			verdict, expires = JudgeCheckIn(checkIn, in.StaleAfter, in.Now)
		}
	}

	var res Result
	wasFresh := meta.IsStatusConditionTrue(d.Status.Conditions, itmv1.DeviceConditionCheckedIn)
	fresh := verdict == CheckInFresh
	switch verdict {
	case NeverCheckedIn:
		set(metav1.Condition{Type: itmv1.DeviceConditionCheckedIn, Status: metav1.ConditionFalse,
			Reason: itmv1.ReasonNeverCheckedIn, Message: "no check-in has been received"})
	case CheckInFresh:
		set(metav1.Condition{Type: itmv1.DeviceConditionCheckedIn, Status: metav1.ConditionTrue,
			Reason: itmv1.ReasonCheckInFresh, Message: fmt.Sprintf("checked in within %s", in.StaleAfter)})
		res.RequeueAfter = expires.Sub(in.Now)
	case CheckInInFuture:
		// Only a status.lastCheckIn ahead of this clock gets here (a Lease
		// renew time ahead of it is never used): it does not count.
		checkIn = nil
		set(metav1.Condition{Type: itmv1.DeviceConditionCheckedIn, Status: metav1.ConditionFalse,
			Reason:  itmv1.ReasonCheckInStale,
			Message: fmt.Sprintf("last check-in %s lies in the future", st.LastCheckIn.UTC().Format(time.RFC3339))})
	default:
		set(metav1.Condition{Type: itmv1.DeviceConditionCheckedIn, Status: metav1.ConditionFalse,
			Reason:  itmv1.ReasonCheckInStale,
			Message: fmt.Sprintf("last check-in %s is older than %s", checkIn.UTC().Format(time.RFC3339), in.StaleAfter)})
	}
	if checkIn != nil {
		due := st.LastCheckIn == nil || fresh != wasFresh || checkIn.Sub(st.LastCheckIn.Time) >= in.RefreshEvery
		if due && (st.LastCheckIn == nil || !st.LastCheckIn.Time.Equal(*checkIn)) {
			t := metav1.NewTime(*checkIn)
			st.LastCheckIn = &t
		}
	}

	judged := *d
	judged.Status.Observed = st.Observed
	_, outside := Addresses(&judged, in.AddressRanges)

	set(upToDate(d, st.Observed))
	kit.Summarize(&st.Conditions, &st.ObservedGeneration, d.Generation, in.Now, Ready(d, in, verdict, outside))
	res.Status = st
	return res
}

func upToDate(d *itmv1.Device, observed *itmv1.ObservedFacts) metav1.Condition {
	c := metav1.Condition{Type: itmv1.DeviceConditionUpToDate}
	target := ""
	if d.Spec.OS != nil {
		target = d.Spec.OS.TargetVersion
	}
	actual := ""
	if observed != nil {
		actual = observed.OSVersion
	}
	switch {
	case target == "":
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, itmv1.ReasonNoTargetVersion, "no target version is set"
	case actual == "":
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, itmv1.ReasonVersionUnknown,
			fmt.Sprintf("observed OS version is unknown; target is %s", target)
	case actual == target:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, itmv1.ReasonVersionMatches, "runs target version "+target
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, itmv1.ReasonVersionDiffers,
			fmt.Sprintf("runs %s; target is %s", actual, target)
	}
	return c
}

// Ready is the Device's kstatus summary (DESIGN §3): reconciled and no
// problem of itmanager's making. Whether the device checks in is CheckedIn's
// business, not Ready's: a laptop that is asleep is still Ready, so a GitOps
// tool never turns Degraded because someone closed a lid. Not Ready:
//   - an agent whose enrolment the enrolment controller has not finished
//     (Reconciling: it finishes by itself);
//   - an enrolment Secret name held by a Secret itmanager did not create, an
//     address another Device claims too, an address outside
//     --agent-address-cidrs (Stalled: only a person changes that).
func Ready(d *itmv1.Device, in Input, checkIn CheckInVerdict, outside []string) kit.Summary {
	outsideMsg := ""
	if len(outside) > 0 {
		outsideMsg = "addresses outside the allowed ranges (--agent-address-cidrs) do not count: " + strings.Join(outside, ", ")
	}
	agent := d.Spec.Agent != nil && d.Spec.Agent.Enabled && d.Spec.Class != itmv1.DeviceClassNode
	switch {
	case len(in.Conflicts) > 0:
		addrs := make([]string, 0, len(in.Conflicts))
		for a := range in.Conflicts {
			addrs = append(addrs, a)
		}
		slices.Sort(addrs)
		parts := make([]string, 0, len(addrs))
		for _, a := range addrs {
			parts = append(parts, fmt.Sprintf("%s (also claimed by %s)", a, strings.Join(in.Conflicts[a], ", ")))
		}
		msg := "addresses claimed by more than one Device are denied for all of them: " + strings.Join(parts, "; ")
		if outsideMsg != "" {
			msg += "; " + outsideMsg
		}
		return kit.Summary{Reason: itmv1.ReasonAddressConflict, Message: msg, Stalled: true}
	case outsideMsg != "":
		return kit.Summary{Reason: itmv1.ReasonAddressOutsideRanges, Message: outsideMsg, Stalled: true}
	case d.Spec.Lifecycle == itmv1.DeviceLifecycleRetired:
		return kit.Summary{Ready: true, Reason: itmv1.ReasonDeviceRetired, Message: "the device is retired; it gets no access and is never assigned"}
	case d.Spec.Lifecycle == itmv1.DeviceLifecycleLost:
		return kit.Summary{Ready: true, Reason: itmv1.ReasonDeviceLost, Message: "the device is lost; it gets no access and is never assigned"}
	case agent && in.EnrolmentConflict != "":
		return kit.Summary{Reason: itmv1.ReasonEnrolmentConflict, Message: in.EnrolmentConflict, Stalled: true}
	case agent && in.Unenrolled != "":
		return kit.Summary{Reason: itmv1.ReasonAwaitingEnrolment, Message: in.Unenrolled, Reconciling: true}
	case !ExpectsCheckIns(d):
		return kit.Summary{Ready: true, Reason: itmv1.ReasonNoCheckInNeeded, Message: "the device has no agent; its static addresses are used"}
	case checkIn == CheckInFresh:
		return kit.Summary{Ready: true, Reason: itmv1.ReasonDeviceCheckedIn, Message: "the device checks in"}
	case checkIn == NeverCheckedIn:
		return kit.Summary{Ready: true, Reason: itmv1.ReasonAwaitingCheckIn,
			Message: "reconciled; no check-in has been received yet (CheckedIn turns True when it is)"}
	default:
		return kit.Summary{Ready: true, Reason: itmv1.ReasonReconciled,
			Message: "reconciled; the device has not checked in recently (see CheckedIn), which Ready does not count"}
	}
}

// NodeFacts are the observed facts of the Device that mirrors node: its
// addresses, its hostname, and its OS version from the label
// itmanager.io/os-version, else nodeInfo.osImage.
func NodeFacts(node *corev1.Node) *itmv1.ObservedFacts {
	f := &itmv1.ObservedFacts{OSVersion: node.Status.NodeInfo.OSImage, AgentVersion: node.Status.NodeInfo.KubeletVersion}
	if v := node.Labels[itmv1.LabelOSVersion]; v != "" {
		f.OSVersion = v
	}
	f.OSVersion, f.AgentVersion = text.Truncate(f.OSVersion, 128), text.Truncate(f.AgentVersion, 64)
	seen := map[string]bool{}
	for _, a := range node.Status.Addresses {
		switch a.Type {
		case corev1.NodeHostName:
			if f.Hostname == "" {
				f.Hostname = a.Address
			}
		case corev1.NodeInternalIP, corev1.NodeExternalIP:
			ip, err := netip.ParseAddr(a.Address)
			if err != nil || ip.Zone() != "" {
				continue
			}
			if !seen[a.Address] && len(f.Addresses) < 8 {
				seen[a.Address] = true
				f.Addresses = append(f.Addresses, a.Address)
			}
		}
	}
	slices.Sort(f.Addresses)
	return f
}
