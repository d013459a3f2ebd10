// Package nodeupgrade decides a Node device's upgrade one step at a time
// (cordon, drain, run the upgrade Job, wait for the node's new version,
// uncordon what itmanager cordoned) and classifies the node's pods for the
// drain. It does no I/O: the controller gathers the facts, asks Next, does
// the one step, and asks again with what that step changed.
package nodeupgrade

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/rollout"
)

// DefaultDrainTimeout applies when the window sets no drain.timeout.
const DefaultDrainTimeout = 30 * time.Minute

// DrainTimeout is the window's drain.timeout, DefaultDrainTimeout when
// unset.
func DrainTimeout(d *itmv1.Drain) time.Duration {
	if d.Timeout != nil {
		return d.Timeout.Duration
	}
	return DefaultDrainTimeout
}

// Action is the one thing to do next.
type Action string

const (
	// Cordon: make the node unschedulable under itmanager's mark.
	Cordon Action = "Cordon"
	// Observe: look up the upgrade Job and, as it stands, the pods on the
	// node (no Job yet, node cordoned: pods listed before the cordon could
	// miss one scheduled just before it) or the Job's version report (Job
	// complete). After a Cordon the facts are observed again.
	Observe Action = "Observe"
	// EvictPods: send an eviction for each of Step.Pods.
	EvictPods Action = "Evict"
	// CreateJob: create the upgrade Job and record Step.Message.
	CreateJob Action = "CreateJob"
	// LabelNode: set the Node's os-version label to Step.Version.
	LabelNode Action = "LabelNode"
	// ReadCordon: read the Node's cordon mark live before releasing it: a
	// cache that has not yet seen itmanager's mark would leave the node
	// cordoned for good.
	ReadCordon Action = "ReadCordon"
	// Wait: record Step.Message and look again after the drain poll.
	Wait Action = "Wait"
	// Finish: the upgrade succeeded; uncordon first when Step.Uncordon,
	// and record it only once the node is back.
	Finish Action = "Finish"
	// Fail: record the failure (Step.Reason, Step.Message); uncordon only
	// when Step.Uncordon, else the node is left as it is.
	Fail Action = "Fail"
)

// CordonFacts is what is known of the Node's cordon.
type CordonFacts struct {
	// Unschedulable is the Node's spec.unschedulable.
	Unschedulable bool
	// Ours: the Node carries itmanager's cordon mark (only such a node is
	// ever uncordoned by itmanager).
	Ours bool
	// Live: Ours was read from the API server, not the cache.
	Live bool
}

// JobFacts is what is known of the upgrade Job.
type JobFacts struct {
	// Observed: the Job was looked up (and the facts below that depend on
	// it gathered).
	Observed bool
	Exists   bool
	Name     string
	Failed   bool
	// Failure is the Failed condition's reason and message ("unknown"
	// when there is none).
	Failure  string
	Complete bool
	// Report is the termination message of the Job's succeeded upgrade
	// container (gathered when Complete).
	Report string
}

// Facts are what the controller observed for one Node device's upgrade.
type Facts struct {
	Now time.Time
	// NodeName is the device's spec.nodeName; NodeFound whether it exists.
	NodeName  string
	NodeFound bool
	Cordon    CordonFacts
	// NodeVersion is the Node's itmanager.io/os-version label.
	NodeVersion string
	// StartedAt is status.upgrade.startedAt (nil: unknown, never times out).
	StartedAt *time.Time
	// DrainTimeout is the window's drain timeout (see DrainTimeout).
	DrainTimeout time.Duration
	// TargetVersion is the device's spec.os.targetVersion; NeedsUpgrade
	// whether its observed version still differs from it.
	TargetVersion string
	NeedsUpgrade  bool
	Job           JobFacts
	// Pods are the node's pods, classified (gathered when there is no Job),
	// with what became of their evictions in this pass.
	Pods []Pod
}

// Step is the next thing to do.
type Step struct {
	Action Action
	// Reason is why a Fail or Finish ends the upgrade (api/v1alpha1).
	Reason string
	// Message is the device's status.upgrade.message to record.
	Message string
	// Blocked says what holds the drain (a Wait while draining), for the
	// window's status.blockedBy.
	Blocked string
	// Pods to evict (EvictPods).
	Pods []Pod
	// Version for the Node's label (LabelNode).
	Version string
	// Uncordon: release itmanager's cordon (Finish, Fail). Never set for a
	// node someone else cordoned.
	Uncordon bool
}

// Next decides the next step. Every step reads the world first, so the
// machine is idempotent and resumes after a restart where it was.
func Next(f Facts) Step {
	if !f.NodeFound {
		return Step{Action: Fail, Reason: itmv1.ReasonNodeGone, Message: "node " + f.NodeName + " is gone"}
	}
	// Cordon, unless someone else already did (then it is theirs to undo),
	// or the upgrade Job of this attempt has already ended: a reconcile on
	// a cache that has not yet seen our own record of the finish, or a
	// restart between the uncordon and that record, would otherwise take
	// a node whose upgrade is over out of service a second time. The Job
	// is looked up first for that (the pods only once the node is
	// cordoned: see Observe).
	if !f.Job.Observed {
		return Step{Action: Observe}
	}
	ended := f.Job.Exists && (f.Job.Failed || f.Job.Complete)
	if !f.Cordon.Unschedulable && !ended {
		if !f.Job.Exists && drainTimedOut(f) {
			// The drain already timed out and the node was given back (a
			// failure whose record was lost to a conflict or a restart):
			// record it again, never cordon and evict a second time.
			return Step{Action: Fail, Reason: itmv1.ReasonDrainTimeout,
				Message: fmt.Sprintf("drain did not finish within %s; never forced, the node is not cordoned", f.DrainTimeout)}
		}
		return Step{Action: Cordon}
	}
	if !f.Job.Exists {
		return drain(f)
	}
	switch {
	case f.Job.Failed:
		left := "the node is left cordoned for inspection"
		if !f.Cordon.Unschedulable {
			left = "the node is not cordoned (someone uncordoned it)"
		}
		return Step{Action: Fail, Reason: itmv1.ReasonUpgradeJobFailed,
			Message: fmt.Sprintf("upgrade Job %s failed: %s; %s", f.Job.Name, f.Job.Failure, left)}
	case f.Job.Complete:
		return complete(f)
	}
	return Step{Action: Wait, Message: "upgrade Job " + f.Job.Name + " running"}
}

// drain: the Job only starts on an empty node; a drain that outlasts its
// timeout fails the device, never forces, and gives back the node.
func drain(f Facts) Step {
	var evict []Pod
	for _, p := range f.Pods {
		if p.Verdict.Class == Evict && p.Eviction == NotTried {
			evict = append(evict, p)
		}
	}
	if len(evict) > 0 {
		return Step{Action: EvictPods, Pods: evict}
	}
	remaining, blocked := Drain(f.Pods)
	if remaining == 0 {
		return Step{Action: CreateJob, Message: "drained; upgrade Job " + f.Job.Name + " started"}
	}
	if drainTimedOut(f) {
		if s, ok := release(f); !ok {
			return s
		}
		msg := fmt.Sprintf("drain did not finish within %s: %s", f.DrainTimeout, cmp.Or(blocked, fmt.Sprintf("%d pods remain", remaining)))
		left := "; never forced, the node is uncordoned"
		if !f.Cordon.Ours {
			left = "; never forced, the node stays cordoned (itmanager did not cordon it)"
		}
		return Step{Action: Fail, Reason: itmv1.ReasonDrainTimeout, Uncordon: f.Cordon.Ours, Message: msg + left}
	}
	return Step{Action: Wait, Blocked: blocked, Message: fmt.Sprintf("draining: %d pods remain%s", remaining, prefixed("; ", blocked))}
}

// complete: the Job succeeded. Its version report (if any) becomes the
// Node's label; success needs the device to observe the target.
func complete(f Facts) Step {
	version, err := rollout.ParseVersionReport(f.Job.Report)
	switch {
	case errors.Is(err, rollout.ErrNoReport):
	case err != nil:
		return Step{Action: Fail, Reason: itmv1.ReasonVersionReportRefused,
			Message: fmt.Sprintf("upgrade Job %s succeeded but its version report was refused: %s; the node is left cordoned for inspection", f.Job.Name, err)}
	case f.NodeVersion != version:
		return Step{Action: LabelNode, Version: version}
	}
	if f.NeedsUpgrade {
		// The Job is done; the node reports its new version when it is back.
		return Step{Action: Wait, Message: "upgrade Job succeeded; waiting for the node to report " + f.TargetVersion}
	}
	if s, ok := release(f); !ok {
		return s
	}
	return Step{Action: Finish, Reason: itmv1.ReasonNodeUpgraded, Uncordon: f.Cordon.Ours, Message: "upgraded to " + f.TargetVersion}
}

// drainTimedOut: the drain has run for its timeout (an unknown start never
// times out).
func drainTimedOut(f Facts) bool {
	return f.StartedAt != nil && !f.Now.Before(f.StartedAt.Add(f.DrainTimeout))
}

// release is ready (true) to decide about giving the node back once the
// cordon mark was read live.
func release(f Facts) (Step, bool) {
	if !f.Cordon.Live {
		return Step{Action: ReadCordon}, false
	}
	return Step{}, true
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}
