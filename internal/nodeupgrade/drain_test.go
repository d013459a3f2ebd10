package nodeupgrade

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
)

const upgrades = "itmanager-upgrades"

type podMod func(*corev1.Pod)

func pod(mods ...podMod) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: map[string]string{"app": "web"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	ownedBy("ReplicaSet")(p)
	for _, m := range mods {
		m(p)
	}
	return p
}

func ownedBy(kind string) podMod {
	return func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: "x", UID: "u", Controller: ptr.To(true)}}
	}
}

func unowned(p *corev1.Pod) { p.OwnerReferences = nil }

func tolerates(t corev1.Toleration) podMod {
	return func(p *corev1.Pod) { p.Spec.Tolerations = append(p.Spec.Tolerations, t) }
}

// ownedNotController has an owner that is not its controller.
func ownedNotController(p *corev1.Pod) {
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "x", UID: "u"}}
}

func drainSkip(p *corev1.Pod) {
	if p.Labels == nil {
		p.Labels = map[string]string{}
	}
	p.Labels["itmanager.io/drain"] = "skip"
}

func mirror(p *corev1.Pod) { p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "abc"} }

func phase(ph corev1.PodPhase) podMod { return func(p *corev1.Pod) { p.Status.Phase = ph } }

func deleting(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }

func emptyDir(p *corev1.Pod) {
	p.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
}

func upgradeJobPod(ns string) podMod {
	return func(p *corev1.Pod) {
		p.Namespace, p.Labels = ns, map[string]string{"itmanager.io/device": "node-a"}
		ownedBy("Job")(p)
	}
}

var (
	skip   = func(rule string) Verdict { return Verdict{Class: Skip, Rule: rule} }
	decide = func(f Filter, p *corev1.Pod) *Verdict {
		if v, ok := f(p); ok {
			return &v
		}
		return nil
	}
)

func TestMirrorPod(t *testing.T) {
	if v := decide(MirrorPod, pod(mirror)); v == nil || *v != skip(RuleMirror) {
		t.Errorf("mirror pod: %+v", v)
	}
	if v := decide(MirrorPod, pod()); v != nil {
		t.Errorf("ordinary pod decided: %+v", v)
	}
}

func TestCompleted(t *testing.T) {
	for ph, want := range map[corev1.PodPhase]bool{corev1.PodSucceeded: true, corev1.PodFailed: true, corev1.PodRunning: false, corev1.PodPending: false, "": false} {
		v := decide(Completed, pod(phase(ph)))
		if (v != nil) != want || v != nil && *v != skip(RuleCompleted) {
			t.Errorf("phase %q: %+v, want decided=%t", ph, v, want)
		}
	}
}

func TestDaemonSetPod(t *testing.T) {
	block := Verdict{Class: Block, Rule: RuleDaemonSet, Message: "DaemonSet pod shop/web-1 (drain.ignoreDaemonSets is false)"}
	cases := []struct {
		name   string
		ignore bool
		pod    *corev1.Pod
		want   *Verdict
	}{
		{"ignored: skipped", true, pod(ownedBy("DaemonSet")), ptr.To(skip(RuleDaemonSet))},
		{"not ignored: blocks", false, pod(ownedBy("DaemonSet")), &block},
		{"not ignored, terminating: still blocks", false, pod(ownedBy("DaemonSet"), deleting), &block},
		{"owner that is not the controller: not a DaemonSet pod", false, pod(ownedNotController), nil},
		{"ReplicaSet pod: passed on", false, pod(), nil},
		{"no owner: passed on", true, pod(unowned), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := decide(DaemonSetPod(c.ignore), c.pod); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestUpgradeJobPod(t *testing.T) {
	f := UpgradeJobPod(upgrades, "itmanager.io/device")
	if v := decide(f, pod(upgradeJobPod(upgrades))); v == nil || *v != skip(RuleUpgradeJobPod) {
		t.Errorf("upgrade Job pod: %+v", v)
	}
	if v := decide(f, pod(upgradeJobPod("shop"))); v != nil {
		t.Errorf("labelled pod outside the upgrades namespace skipped: %+v", v)
	}
	if v := decide(f, pod(func(p *corev1.Pod) { p.Namespace = upgrades })); v != nil {
		t.Errorf("unlabelled pod in the upgrades namespace skipped: %+v", v)
	}
	if v := decide(f, pod(upgradeJobPod(upgrades), func(p *corev1.Pod) { p.Labels["itmanager.io/device"] = "" })); v != nil {
		t.Errorf("empty device label skipped: %+v", v)
	}
}

func TestTerminatingPod(t *testing.T) {
	if v := decide(TerminatingPod, pod(deleting)); v == nil || *v != (Verdict{Class: Terminating, Rule: RuleTerminating}) {
		t.Errorf("terminating pod: %+v", v)
	}
	if v := decide(TerminatingPod, pod()); v != nil {
		t.Errorf("running pod decided: %+v", v)
	}
}

func TestUnmanaged(t *testing.T) {
	want := Verdict{Class: Block, Rule: RuleUnmanaged, Message: "pod shop/web-1 has no controller; itmanager never deletes it"}
	if v := decide(Unmanaged, pod(unowned)); v == nil || *v != want {
		t.Errorf("unowned pod: %+v", v)
	}
	if v := decide(Unmanaged, pod(ownedNotController)); v == nil || *v != want {
		t.Errorf("owner that is not a controller: %+v", v)
	}
	if v := decide(Unmanaged, pod()); v != nil {
		t.Errorf("controlled pod decided: %+v", v)
	}
}

func TestLocalStorage(t *testing.T) {
	want := Verdict{Class: Block, Rule: RuleLocalStorage, Message: "pod shop/web-1 has emptyDir data (drain.deleteEmptyDirData is false)"}
	if v := decide(LocalStorage(false), pod(emptyDir)); v == nil || *v != want {
		t.Errorf("emptyDir, not allowed: %+v", v)
	}
	if v := decide(LocalStorage(true), pod(emptyDir)); v != nil {
		t.Errorf("emptyDir, allowed: %+v", v)
	}
	if v := decide(LocalStorage(false), pod(func(p *corev1.Pod) { emptyDir(p); p.Spec.Volumes = p.Spec.Volumes[:1] })); v != nil {
		t.Errorf("configMap volume only: %+v", v)
	}
}

// TestClassify is the chain in its order: who wins when several filters
// would decide.
func TestClassify(t *testing.T) {
	evict := Verdict{Class: Evict, Rule: RuleEvictable}
	opts := DrainOptions{IgnoreDaemonSets: true, UpgradesNamespace: upgrades, DeviceLabel: "itmanager.io/device"}
	strict := opts
	strict.IgnoreDaemonSets = false
	cases := []struct {
		name string
		opts DrainOptions
		pod  *corev1.Pod
		want Verdict
	}{
		{"ReplicaSet pod: evict", opts, pod(), evict},
		{"mirror pod without controller: skipped, not blocking", opts, pod(mirror, unowned), skip(RuleMirror)},
		{"mirror wins over completed", opts, pod(mirror, phase(corev1.PodSucceeded)), skip(RuleMirror)},
		{"completed without controller: skipped", opts, pod(unowned, phase(corev1.PodFailed)), skip(RuleCompleted)},
		{"completed DaemonSet pod, DaemonSets not ignored: skipped", strict, pod(ownedBy("DaemonSet"), phase(corev1.PodSucceeded)), skip(RuleCompleted)},
		{"DaemonSet pod with emptyDir, ignored: skipped", opts, pod(ownedBy("DaemonSet"), emptyDir), skip(RuleDaemonSet)},
		{"DaemonSet pod, not ignored, terminating: blocks", strict, pod(ownedBy("DaemonSet"), deleting),
			Verdict{Class: Block, Rule: RuleDaemonSet, Message: "DaemonSet pod shop/web-1 (drain.ignoreDaemonSets is false)"}},
		{"labelled drain=skip: skipped", opts, pod(drainSkip), skip(RuleSkipLabel)},
		{"labelled drain=skip, DaemonSets not ignored: skipped, not blocking", strict, pod(ownedBy("DaemonSet"), drainSkip), skip(RuleSkipLabel)},
		{"labelled drain=skip, no controller and emptyDir: skipped", opts, pod(unowned, emptyDir, drainSkip), skip(RuleSkipLabel)},
		{"labelled drain=skip, terminating: skipped, not waited for", opts, pod(drainSkip, deleting), skip(RuleSkipLabel)},
		{"labelled drain with another value: evict", opts, pod(func(p *corev1.Pod) { p.Labels = map[string]string{"itmanager.io/drain": "later"} }), evict},
		{"completed wins over drain=skip", opts, pod(drainSkip, phase(corev1.PodSucceeded)), skip(RuleCompleted)},
		{"upgrade Job pod: skipped", opts, pod(upgradeJobPod(upgrades)), skip(RuleUpgradeJobPod)},
		{"upgrade Job pod terminating: skipped", opts, pod(upgradeJobPod(upgrades), deleting), skip(RuleUpgradeJobPod)},
		{"terminating pod without controller: terminating, not blocking", opts, pod(unowned, deleting), Verdict{Class: Terminating, Rule: RuleTerminating}},
		{"terminating pod with emptyDir: terminating", opts, pod(emptyDir, deleting), Verdict{Class: Terminating, Rule: RuleTerminating}},
		{"no controller and emptyDir: the controller is named", opts, pod(unowned, emptyDir),
			Verdict{Class: Block, Rule: RuleUnmanaged, Message: "pod shop/web-1 has no controller; itmanager never deletes it"}},
		{"emptyDir: blocks", opts, pod(emptyDir),
			Verdict{Class: Block, Rule: RuleLocalStorage, Message: "pod shop/web-1 has emptyDir data (drain.deleteEmptyDirData is false)"}},
		{"emptyDir, allowed: evict", DrainOptions{IgnoreDaemonSets: true, DeleteEmptyDirData: true, UpgradesNamespace: upgrades, DeviceLabel: "itmanager.io/device"}, pod(emptyDir), evict},
		{"pending pod: evict", opts, pod(phase(corev1.PodPending)), evict},
		{"tolerates the cordon: skipped", opts, pod(tolerates(corev1.Toleration{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})), skip(RuleTolerates)},
		{"tolerates the cordon by key, any effect, terminating: skipped", opts, pod(deleting, tolerates(corev1.Toleration{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists})), skip(RuleTolerates)},
		{"tolerates every taint, with emptyDir: skipped", opts, pod(emptyDir, tolerates(corev1.Toleration{Operator: corev1.TolerationOpExists})), skip(RuleTolerates)},
		{"tolerates the cordon but has no controller: skipped (it stays, nothing deletes it)", opts, pod(unowned, tolerates(corev1.Toleration{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists})), skip(RuleTolerates)},
		{"tolerates NoExecute of the cordon key only: evict", opts, pod(tolerates(corev1.Toleration{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute})), evict},
		{"tolerates another taint: evict", opts, pod(tolerates(corev1.Toleration{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists})), evict},
		{"tolerates the cordon key with a value: evict (the taint has none)", opts, pod(tolerates(corev1.Toleration{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpEqual, Value: "x", Effect: corev1.TaintEffectNoSchedule})), evict},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Classify(c.pod, Filters(c.opts)); got != c.want {
				t.Fatalf("Classify = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestDrain(t *testing.T) {
	cases := []struct {
		name      string
		pods      []Pod
		remaining int
		blocked   string
	}{
		{"none", nil, 0, ""},
		{"skipped pods do not count", []Pod{dsPod, {Verdict: skip(RuleMirror)}}, 0, ""},
		{"evicted and terminating count, name nothing", []Pod{webEvicted, goingPod}, 2, ""},
		{"refused without a known budget", []Pod{{Namespace: "shop", Name: "a", Verdict: Verdict{Class: Evict}, Eviction: Refused}}, 1,
			"pod shop/a: eviction refused by a disruption budget"},
		{"refused by two budgets", []Pod{{Namespace: "shop", Name: "a", Verdict: Verdict{Class: Evict}, Eviction: Refused, Budgets: []string{"shop/x", "shop/y"}}}, 1,
			"pod shop/a: eviction refused by PodDisruptionBudget shop/x, shop/y"},
		{"blockers sorted", []Pod{webRefused, barePod, dsPod}, 2,
			"pod shop/bare has no controller; itmanager never deletes it; pod shop/web-1: eviction refused by PodDisruptionBudget shop/web"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, b := Drain(c.pods)
			if n != c.remaining || b != c.blocked {
				t.Fatalf("Drain = %d, %q; want %d, %q", n, b, c.remaining, c.blocked)
			}
		})
	}
	t.Run("bounded", func(t *testing.T) {
		var many []Pod
		for range 100 {
			many = append(many, barePod)
		}
		n, b := Drain(many)
		if n != 100 || len(b) > MaxMessage || !strings.HasSuffix(b, "...") {
			t.Fatalf("Drain = %d, %d bytes", n, len(b))
		}
	})
}

func TestCoveringBudgets(t *testing.T) {
	budget := func(ns, name string, sel *metav1.LabelSelector) policyv1.PodDisruptionBudget {
		return policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: policyv1.PodDisruptionBudgetSpec{Selector: sel}}
	}
	web := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	got := CoveringBudgets(pod(), []policyv1.PodDisruptionBudget{
		budget("shop", "web", web),
		budget("shop", "db", &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}),
		budget("shop", "all", &metav1.LabelSelector{}),
		budget("shop", "none", nil),
		budget("shop", "bad", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Bogus"}}}),
		budget("other", "web", web),
		// Listed without a namespace (the list was of the pod's namespace):
		// covers the pod, and is named in the pod's namespace.
		budget("", "unplaced", web),
	})
	if want := []string{"shop/web", "shop/all", "shop/unplaced"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("CoveringBudgets = %v, want %v", got, want)
	}
}

func TestEvictionResult(t *testing.T) {
	gr := schema.GroupResource{Resource: "pods"}
	boom := errors.New("connection refused")
	cases := []struct {
		name    string
		err     error
		want    Eviction
		wantErr error
	}{
		{"accepted", nil, Evicted, nil},
		{"pod gone", apierrors.NewNotFound(gr, "web-1"), Evicted, nil},
		{"budget refuses (429)", apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0), Refused, nil},
		{"held past the deadline", context.DeadlineExceeded, Refused, nil},
		{"server timeout", apierrors.NewTimeoutError("budget status", 1), Refused, nil},
		{"anything else is an error", boom, NotTried, boom},
		{"forbidden is an error", apierrors.NewForbidden(gr, "web-1", boom), NotTried, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := EvictionResult(c.err)
			if got != c.want || (c.wantErr != nil && !errors.Is(err, c.wantErr)) || (c.want != NotTried) != (err == nil) {
				t.Fatalf("EvictionResult = %v, %v; want %v, %v", got, err, c.want, c.wantErr)
			}
		})
	}
}
