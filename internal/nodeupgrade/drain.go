package nodeupgrade

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/text"
)

// MaxMessage is Device status.upgrade.message's limit.
const MaxMessage = 1024

// Class is what a drain does with one pod on the node.
type Class string

const (
	// Skip: the pod does not hold the drain (it is not counted).
	Skip Class = "Skip"
	// Block: the pod holds the drain and itmanager will not evict it.
	Block Class = "Block"
	// Terminating: the pod is already going (evicted); it holds the drain
	// until it is gone.
	Terminating Class = "Terminating"
	// Evict: the pod holds the drain until it is evicted through the
	// Eviction API (which respects PodDisruptionBudgets).
	Evict Class = "Evict"
)

// Why a pod was classed so (Verdict.Rule), one per filter.
const (
	RuleMirror        = "MirrorPod"
	RuleCompleted     = "Completed"
	RuleSkipLabel     = "SkipLabel"
	RuleDaemonSet     = "DaemonSet"
	RuleUpgradeJobPod = "UpgradeJobPod"
	RuleTolerates     = "ToleratesCordon"
	RuleTerminating   = "Terminating"
	RuleUnmanaged     = "Unmanaged"
	RuleLocalStorage  = "LocalStorage"
	RuleEvictable     = "Evictable"
)

// Verdict is a filter's decision about one pod.
type Verdict struct {
	Class Class
	// Rule names the filter that decided.
	Rule string
	// Message says why a Block pod holds the drain (for status.blockedBy).
	Message string
}

// Filter decides about a pod, or passes it on (false) to the next filter.
type Filter func(p *corev1.Pod) (Verdict, bool)

// DrainOptions are the MaintenanceWindow's drain settings and where
// itmanager's own upgrade Jobs run.
type DrainOptions struct {
	// IgnoreDaemonSets leaves DaemonSet pods on the node (else they block).
	IgnoreDaemonSets bool
	// DeleteEmptyDirData allows evicting pods with emptyDir volumes.
	DeleteEmptyDirData bool
	// UpgradesNamespace and DeviceLabel identify an upgrade Job's pod: in
	// that namespace, carrying that label.
	UpgradesNamespace string
	DeviceLabel       string
}

// Filters is the drain chain, in order, as kubectl drain (and Cluster
// API's drain) classify pods: the first filter that decides wins, a pod no
// filter decides about is evicted. The order matters: a finished pod is
// skipped even if a DaemonSet owns it, and a DaemonSet pod blocks (when
// not ignored) even while it terminates.
func Filters(o DrainOptions) []Filter {
	return []Filter{
		MirrorPod,
		Completed,
		SkipLabel,
		DaemonSetPod(o.IgnoreDaemonSets),
		UpgradeJobPod(o.UpgradesNamespace, o.DeviceLabel),
		ToleratesCordon,
		TerminatingPod,
		Unmanaged,
		LocalStorage(o.DeleteEmptyDirData),
	}
}

// Classify runs the filters over p.
func Classify(p *corev1.Pod, filters []Filter) Verdict {
	for _, f := range filters {
		if v, ok := f(p); ok {
			return v
		}
	}
	return Verdict{Class: Evict, Rule: RuleEvictable}
}

// MirrorPod skips static pods: their mirror cannot be evicted, the kubelet
// owns them.
func MirrorPod(p *corev1.Pod) (Verdict, bool) {
	if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return Verdict{Class: Skip, Rule: RuleMirror}, true
	}
	return Verdict{}, false
}

// Completed skips pods that finished (succeeded or failed): they hold
// nothing.
func Completed(p *corev1.Pod) (Verdict, bool) {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return Verdict{Class: Skip, Rule: RuleCompleted}, true
	}
	return Verdict{}, false
}

// SkipLabel leaves a pod labelled itmanager.io/drain=skip on the node, even
// a DaemonSet pod that would block or a pod that is terminating: whoever
// runs it asked that no drain waits for it or evicts it.
func SkipLabel(p *corev1.Pod) (Verdict, bool) {
	if p.Labels[v1alpha1.LabelDrain] == v1alpha1.DrainSkip {
		return Verdict{Class: Skip, Rule: RuleSkipLabel}, true
	}
	return Verdict{}, false
}

// DaemonSetPod leaves DaemonSet-managed pods when ignore (the DaemonSet
// would put them back anyway); otherwise they block the drain.
func DaemonSetPod(ignore bool) Filter {
	return func(p *corev1.Pod) (Verdict, bool) {
		owner := metav1.GetControllerOf(p)
		if owner == nil || owner.Kind != "DaemonSet" {
			return Verdict{}, false
		}
		if ignore {
			return Verdict{Class: Skip, Rule: RuleDaemonSet}, true
		}
		return Verdict{Class: Block, Rule: RuleDaemonSet,
			Message: fmt.Sprintf("DaemonSet pod %s/%s (drain.ignoreDaemonSets is false)", p.Namespace, p.Name)}, true
	}
}

// UpgradeJobPod skips the pod of an upgrade Job: it runs on the node on
// purpose and is never drained away from it.
func UpgradeJobPod(namespace, deviceLabel string) Filter {
	return func(p *corev1.Pod) (Verdict, bool) {
		if p.Namespace == namespace && p.Labels[deviceLabel] != "" {
			return Verdict{Class: Skip, Rule: RuleUpgradeJobPod}, true
		}
		return Verdict{}, false
	}
}

// cordonTaint is the taint a cordoned node carries
// (node.kubernetes.io/unschedulable:NoSchedule).
var cordonTaint = corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}

// ToleratesCordon skips a pod that tolerates the cordon: evicted, it (or
// its replacement) would be scheduled straight back onto the cordoned node,
// so evicting it drains nothing and, for itmanager's own pods on the only
// node that can run them, would leave nothing to finish the upgrade and
// uncordon it. Karpenter leaves pods that tolerate its disruption taint in
// place for the same reason.
func ToleratesCordon(p *corev1.Pod) (Verdict, bool) {
	for i := range p.Spec.Tolerations {
		t := p.Spec.Tolerations[i]
		if (t.Key == "" && t.Operator == corev1.TolerationOpExists || t.Key == cordonTaint.Key) &&
			(t.Effect == "" || t.Effect == cordonTaint.Effect) &&
			(t.Operator == corev1.TolerationOpExists || t.Value == cordonTaint.Value) {
			return Verdict{Class: Skip, Rule: RuleTolerates}, true
		}
	}
	return Verdict{}, false
}

// TerminatingPod counts a pod already being deleted (evicted) without
// evicting it again.
func TerminatingPod(p *corev1.Pod) (Verdict, bool) {
	if p.DeletionTimestamp != nil {
		return Verdict{Class: Terminating, Rule: RuleTerminating}, true
	}
	return Verdict{}, false
}

// Unmanaged blocks a pod without a controller: nothing would recreate it,
// so itmanager never deletes it (a drain never forces).
func Unmanaged(p *corev1.Pod) (Verdict, bool) {
	if metav1.GetControllerOf(p) == nil {
		return Verdict{Class: Block, Rule: RuleUnmanaged,
			Message: fmt.Sprintf("pod %s/%s has no controller; itmanager never deletes it", p.Namespace, p.Name)}, true
	}
	return Verdict{}, false
}

// LocalStorage blocks a pod with emptyDir data unless deleting it is
// allowed.
func LocalStorage(allowed bool) Filter {
	return func(p *corev1.Pod) (Verdict, bool) {
		if allowed || !slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.EmptyDir != nil }) {
			return Verdict{}, false
		}
		return Verdict{Class: Block, Rule: RuleLocalStorage,
			Message: fmt.Sprintf("pod %s/%s has emptyDir data (drain.deleteEmptyDirData is false)", p.Namespace, p.Name)}, true
	}
}

// Eviction is what became of an Evict pod's eviction in this pass.
type Eviction int

const (
	// NotTried: no eviction was sent yet.
	NotTried Eviction = iota
	// Evicted: the API server accepted the eviction (or the pod was gone).
	Evicted
	// Refused: a disruption budget refused it (429), or the API server held
	// it past the drain's per-eviction deadline.
	Refused
)

// Pod is one pod on the node as the drain sees it.
type Pod struct {
	Namespace, Name string
	Verdict         Verdict
	Eviction        Eviction
	// Budgets are the PodDisruptionBudgets (namespace/name) covering a
	// Refused pod.
	Budgets []string
}

// Key is the pod's namespace/name.
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Holds reports whether the pod keeps the node from counting as drained.
// An evicted pod still holds it until it is gone.
func (p Pod) Holds() bool { return p.Verdict.Class != Skip }

// blocker says why the pod holds the drain, if something other than time
// does.
func (p Pod) blocker() string {
	switch {
	case p.Verdict.Class == Block:
		return p.Verdict.Message
	case p.Eviction == Refused && len(p.Budgets) == 0:
		return fmt.Sprintf("pod %s: eviction refused by a disruption budget", p.Key())
	case p.Eviction == Refused:
		return fmt.Sprintf("pod %s: eviction refused by PodDisruptionBudget %s", p.Key(), strings.Join(p.Budgets, ", "))
	}
	return ""
}

// Drain is the drain's state after this pass's evictions: how many pods
// still hold the node and what blocks them (sorted, bounded for
// status.blockedBy and the device's message).
func Drain(pods []Pod) (remaining int, blocked string) {
	var why []string
	for _, p := range pods {
		if !p.Holds() {
			continue
		}
		remaining++
		if b := p.blocker(); b != "" {
			why = append(why, b)
		}
	}
	slices.Sort(why)
	return remaining, text.Truncate(strings.Join(why, "; "), MaxMessage)
}

// CoveringBudgets names (namespace/name) the budgets in the pod's
// namespace whose selector matches it; a budget with an invalid selector
// covers nothing.
func CoveringBudgets(p *corev1.Pod, budgets []policyv1.PodDisruptionBudget) []string {
	var hit []string
	for _, b := range budgets {
		if b.Namespace != "" && b.Namespace != p.Namespace {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
		if err == nil && sel.Matches(labels.Set(p.Labels)) {
			hit = append(hit, p.Namespace+"/"+b.Name)
		}
	}
	return hit
}

// EvictionResult classifies the API server's answer to an eviction: a
// budget's refusal (429), or the server holding the request past the
// per-eviction deadline while a budget's status is computed, is Refused;
// NotFound (the pod is gone) is Evicted; anything else is an error the
// pass returns.
func EvictionResult(err error) (Eviction, error) {
	switch {
	case err == nil, apierrors.IsNotFound(err):
		return Evicted, nil
	case apierrors.IsTooManyRequests(err), errors.Is(err, context.DeadlineExceeded), apierrors.IsTimeout(err):
		return Refused, nil
	}
	return NotTried, err
}
