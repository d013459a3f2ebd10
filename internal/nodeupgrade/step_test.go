package nodeupgrade

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var t0 = time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC)

const job = "itm-upgrade-node-a-1"

// facts is a Node device mid-upgrade: node found and cordoned by
// itmanager (seen in the cache), started at t0, Job not yet looked at.
func facts(mods ...func(*Facts)) Facts {
	started := t0
	f := Facts{
		Now: t0.Add(time.Minute), NodeName: "node-a", NodeFound: true,
		Cordon:      CordonFacts{Unschedulable: true, Ours: true},
		NodeVersion: "1.0", StartedAt: &started, DrainTimeout: 10 * time.Minute,
		TargetVersion: "2.0", NeedsUpgrade: true,
		Job: JobFacts{Name: job},
	}
	for _, m := range mods {
		m(&f)
	}
	return f
}

func noJob(pods ...Pod) func(*Facts) {
	return func(f *Facts) { f.Job.Observed, f.Pods = true, pods }
}

func jobIs(mod func(*JobFacts)) func(*Facts) {
	return func(f *Facts) {
		f.Job.Observed, f.Job.Exists = true, true
		mod(&f.Job)
	}
}

func completed(report string) func(*JobFacts) {
	return func(j *JobFacts) { j.Complete, j.Report = true, report }
}

func live(ours bool) func(*Facts) {
	return func(f *Facts) { f.Cordon.Ours, f.Cordon.Live = ours, true }
}

// someoneElses is a node cordoned before the upgrade by someone else: no
// mark, in the cache nor live.
func someoneElses(f *Facts) { f.Cordon = CordonFacts{Unschedulable: true} }

func at(d time.Duration) func(*Facts) { return func(f *Facts) { f.Now = t0.Add(d) } }

func upToDate(f *Facts) { f.NeedsUpgrade = false }

var (
	webPod     = Pod{Namespace: "shop", Name: "web-1", Verdict: Verdict{Class: Evict, Rule: RuleEvictable}}
	webRefused = Pod{Namespace: "shop", Name: "web-1", Verdict: Verdict{Class: Evict, Rule: RuleEvictable}, Eviction: Refused, Budgets: []string{"shop/web"}}
	webEvicted = Pod{Namespace: "shop", Name: "web-1", Verdict: Verdict{Class: Evict, Rule: RuleEvictable}, Eviction: Evicted}
	dsPod      = Pod{Namespace: "kube-system", Name: "proxy", Verdict: Verdict{Class: Skip, Rule: RuleDaemonSet}}
	goingPod   = Pod{Namespace: "shop", Name: "web-0", Verdict: Verdict{Class: Terminating, Rule: RuleTerminating}}
	barePod    = Pod{Namespace: "shop", Name: "bare", Verdict: Verdict{Class: Block, Rule: RuleUnmanaged, Message: "pod shop/bare has no controller; itmanager never deletes it"}}
)

func TestNext(t *testing.T) {
	cases := []struct {
		name  string
		facts Facts
		want  Step
	}{
		// The node.
		{"node gone: fail, nothing to uncordon", facts(func(f *Facts) { f.NodeFound = false }),
			Step{Action: Fail, Reason: itmv1.ReasonNodeGone, Message: "node node-a is gone"}},
		{"node gone wins over everything", facts(func(f *Facts) { f.NodeFound, f.Cordon = false, CordonFacts{} }, noJob(webPod)),
			Step{Action: Fail, Reason: itmv1.ReasonNodeGone, Message: "node node-a is gone"}},
		{"schedulable, Job not looked up: look it up before cordoning", facts(func(f *Facts) { f.Cordon = CordonFacts{} }),
			Step{Action: Observe}},
		{"schedulable, no Job: cordon first", facts(func(f *Facts) { f.Cordon = CordonFacts{} }, noJob()),
			Step{Action: Cordon}},
		{"schedulable, Job still running: cordon again", facts(func(f *Facts) { f.Cordon = CordonFacts{} }, jobIs(func(*JobFacts) {})),
			Step{Action: Cordon}},
		{"schedulable, Job of this attempt succeeded (a cache behind our finish): never cordons again, finishes once the mark was read live",
			facts(func(f *Facts) { f.Cordon = CordonFacts{} }, upToDate, jobIs(completed(""))),
			Step{Action: ReadCordon}},
		{"schedulable, Job succeeded, mark read live (none): finish without uncordoning",
			facts(func(f *Facts) { f.Cordon = CordonFacts{} }, upToDate, jobIs(completed("")), live(false)),
			Step{Action: Finish, Reason: itmv1.ReasonNodeUpgraded, Message: "upgraded to 2.0"}},
		{"schedulable, Job failed: fail without cordoning, saying the node is not cordoned",
			facts(func(f *Facts) { f.Cordon = CordonFacts{} }, jobIs(func(j *JobFacts) { j.Failed, j.Failure = true, "BackoffLimitExceeded" })),
			Step{Action: Fail, Reason: itmv1.ReasonUpgradeJobFailed,
				Message: "upgrade Job " + job + " failed: BackoffLimitExceeded; the node is not cordoned (someone uncordoned it)"}},
		{"our mark but uncordoned meanwhile: cordon again", facts(func(f *Facts) { f.Cordon.Unschedulable = false }, noJob()),
			Step{Action: Cordon}},
		{"cordoned by someone else: not cordoned again, observed", facts(someoneElses),
			Step{Action: Observe}},
		{"cordoned by us: observe the Job", facts(),
			Step{Action: Observe}},

		// The drain (no Job yet).
		{"an evictable pod: evict it (only it)", facts(noJob(dsPod, goingPod, barePod, webPod)),
			Step{Action: EvictPods, Pods: []Pod{webPod}}},
		{"evictable pods evicted even at the drain timeout (before giving up)", facts(at(time.Hour), noJob(webPod)),
			Step{Action: EvictPods, Pods: []Pod{webPod}}},
		{"nothing holds the node: create the Job", facts(noJob(dsPod)),
			Step{Action: CreateJob, Message: "drained; upgrade Job " + job + " started"}},
		{"no pods at all: create the Job", facts(noJob()),
			Step{Action: CreateJob, Message: "drained; upgrade Job " + job + " started"}},
		{"evicted pod still there: wait, nothing blocks", facts(noJob(webEvicted, goingPod)),
			Step{Action: Wait, Message: "draining: 2 pods remain"}},
		{"PDB refused: wait and say which budget", facts(noJob(webRefused, dsPod)),
			Step{Action: Wait, Blocked: "pod shop/web-1: eviction refused by PodDisruptionBudget shop/web",
				Message: "draining: 1 pods remain; pod shop/web-1: eviction refused by PodDisruptionBudget shop/web"}},
		{"blockers sorted and joined", facts(noJob(webRefused, barePod)),
			Step{Action: Wait, Blocked: "pod shop/bare has no controller; itmanager never deletes it; pod shop/web-1: eviction refused by PodDisruptionBudget shop/web",
				Message: "draining: 2 pods remain; pod shop/bare has no controller; itmanager never deletes it; pod shop/web-1: eviction refused by PodDisruptionBudget shop/web"}},
		{"drain timeout not reached one instant before it", facts(at(10*time.Minute-time.Nanosecond), noJob(webRefused)),
			Step{Action: Wait, Blocked: "pod shop/web-1: eviction refused by PodDisruptionBudget shop/web",
				Message: "draining: 1 pods remain; pod shop/web-1: eviction refused by PodDisruptionBudget shop/web"}},
		{"drain timeout reached: read the mark live before giving the node back", facts(at(10*time.Minute), noJob(webRefused)),
			Step{Action: ReadCordon}},
		{"drain timeout, ours: fail, never forced, uncordon", facts(at(10*time.Minute), noJob(webRefused), live(true)),
			Step{Action: Fail, Reason: itmv1.ReasonDrainTimeout, Uncordon: true,
				Message: "drain did not finish within 10m0s: pod shop/web-1: eviction refused by PodDisruptionBudget shop/web; never forced, the node is uncordoned"}},
		{"drain timeout, someone else's cordon: fail, node stays cordoned, and the message says so", facts(someoneElses, at(10*time.Minute), noJob(webRefused), live(false)),
			Step{Action: Fail, Reason: itmv1.ReasonDrainTimeout,
				Message: "drain did not finish within 10m0s: pod shop/web-1: eviction refused by PodDisruptionBudget shop/web; never forced, the node stays cordoned (itmanager did not cordon it)"}},
		{"drain timeout, the cache saw our mark but the live Node has none: not uncordoned", facts(at(10*time.Minute), noJob(webRefused), live(false)),
			Step{Action: Fail, Reason: itmv1.ReasonDrainTimeout,
				Message: "drain did not finish within 10m0s: pod shop/web-1: eviction refused by PodDisruptionBudget shop/web; never forced, the node stays cordoned (itmanager did not cordon it)"}},
		{"drain timed out, node given back, no Job (the failure's record was lost): fail again, never cordon a second time",
			facts(func(f *Facts) { f.Cordon = CordonFacts{} }, at(time.Hour), noJob(webPod)),
			Step{Action: Fail, Reason: itmv1.ReasonDrainTimeout, Message: "drain did not finish within 10m0s; never forced, the node is not cordoned"}},
		{"drain timeout with nothing named: count the pods", facts(at(time.Hour), noJob(goingPod, webEvicted), live(true)),
			Step{Action: Fail, Reason: itmv1.ReasonDrainTimeout, Uncordon: true,
				Message: "drain did not finish within 10m0s: 2 pods remain; never forced, the node is uncordoned"}},
		{"a zero drain timeout times out at once (as it always did; admission refuses it)", facts(func(f *Facts) { f.DrainTimeout = 0 }, at(0), noJob(goingPod), live(true)),
			Step{Action: Fail, Reason: itmv1.ReasonDrainTimeout, Uncordon: true,
				Message: "drain did not finish within 0s: 1 pods remain; never forced, the node is uncordoned"}},
		{"no startedAt: the drain never times out", facts(func(f *Facts) { f.StartedAt = nil }, at(1000*time.Hour), noJob(goingPod)),
			Step{Action: Wait, Message: "draining: 1 pods remain"}},

		// The Job.
		{"Job running: wait", facts(jobIs(func(*JobFacts) {})),
			Step{Action: Wait, Message: "upgrade Job " + job + " running"}},
		{"Job running past the drain timeout: the drain timeout no longer applies", facts(at(time.Hour), jobIs(func(*JobFacts) {})),
			Step{Action: Wait, Message: "upgrade Job " + job + " running"}},
		{"Job failed: fail, left cordoned even though ours", facts(live(true), jobIs(func(j *JobFacts) {
			j.Failed, j.Failure = true, "BackoffLimitExceeded Job has reached the specified backoff limit"
		})),
			Step{Action: Fail, Reason: itmv1.ReasonUpgradeJobFailed,
				Message: "upgrade Job " + job + " failed: BackoffLimitExceeded Job has reached the specified backoff limit; the node is left cordoned for inspection"}},
		{"Job failed, someone else's cordon: fail, left cordoned", facts(someoneElses, jobIs(func(j *JobFacts) { j.Failed, j.Failure = true, "unknown" })),
			Step{Action: Fail, Reason: itmv1.ReasonUpgradeJobFailed,
				Message: "upgrade Job " + job + " failed: unknown; the node is left cordoned for inspection"}},
		{"Job succeeded with a garbage report: fail, left cordoned", facts(live(true), jobIs(completed("itmanager.io/os-version=2.0; rm -rf /"))),
			Step{Action: Fail, Reason: itmv1.ReasonVersionReportRefused,
				Message: "upgrade Job " + job + " succeeded but its version report was refused: the reported version is not a valid label value: " +
					"a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?'); the node is left cordoned for inspection"}},
		{"Job succeeded reporting a new version: label the Node", facts(jobIs(completed("itmanager.io/os-version=2.0\n"))),
			Step{Action: LabelNode, Version: "2.0"}},
		{"report already on the Node, device not yet observing it: wait", facts(func(f *Facts) { f.NodeVersion = "2.0" }, jobIs(completed("itmanager.io/os-version=2.0"))),
			Step{Action: Wait, Message: "upgrade Job succeeded; waiting for the node to report 2.0"}},
		{"no report, device not yet at target: wait for the node", facts(jobIs(completed(""))),
			Step{Action: Wait, Message: "upgrade Job succeeded; waiting for the node to report 2.0"}},
		{"succeeded and at target: read the mark live first", facts(upToDate, jobIs(completed(""))),
			Step{Action: ReadCordon}},
		{"succeeded, ours: finish and uncordon", facts(upToDate, live(true), jobIs(completed(""))),
			Step{Action: Finish, Reason: itmv1.ReasonNodeUpgraded, Uncordon: true, Message: "upgraded to 2.0"}},
		{"succeeded, someone else's cordon: finish, node stays cordoned", facts(someoneElses, upToDate, live(false), jobIs(completed(""))),
			Step{Action: Finish, Reason: itmv1.ReasonNodeUpgraded, Message: "upgraded to 2.0"}},
		{"succeeded, report matches the label: finish", facts(upToDate, live(true), func(f *Facts) { f.NodeVersion = "2.0" }, jobIs(completed("itmanager.io/os-version=2.0"))),
			Step{Action: Finish, Reason: itmv1.ReasonNodeUpgraded, Uncordon: true, Message: "upgraded to 2.0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Next(c.facts); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("Next =\n  %+v\nwant\n  %+v", got, c.want)
			}
		})
	}
}

func TestDrainTimeout(t *testing.T) {
	if got := DrainTimeout(&itmv1.Drain{}); got != 30*time.Minute {
		t.Errorf("unset: %s, want 30m", got)
	}
	if got := DrainTimeout(&itmv1.Drain{Timeout: &metav1.Duration{Duration: 3 * time.Second}}); got != 3*time.Second {
		t.Errorf("3s: %s", got)
	}
}

// TestNeverReleasesSomeoneElsesCordon runs every path on a node someone
// else cordoned (no mark, in the cache or live) and on one whose mark the
// live read did not find: no step ever uncordons it.
func TestNeverReleasesSomeoneElsesCordon(t *testing.T) {
	jobs := map[string]func(*Facts){
		"not observed":       func(*Facts) {},
		"no Job, drained":    noJob(dsPod),
		"no Job, blocked":    noJob(webRefused),
		"no Job, evictable":  noJob(webPod),
		"Job running":        jobIs(func(*JobFacts) {}),
		"Job failed":         jobIs(func(j *JobFacts) { j.Failed = true }),
		"Job done, no rep.":  jobIs(completed("")),
		"Job done, garbage":  jobIs(completed("nonsense")),
		"Job done, reported": jobIs(completed("itmanager.io/os-version=2.0")),
	}
	for name, job := range jobs {
		for _, now := range []time.Duration{time.Minute, time.Hour} {
			for _, needs := range []bool{true, false} {
				for _, liveRead := range []bool{false, true} {
					f := facts(someoneElses, job, at(now), func(f *Facts) { f.NeedsUpgrade, f.Cordon.Live = needs, liveRead })
					if s := Next(f); s.Uncordon || s.Action == Cordon {
						t.Errorf("%s, at +%s, needsUpgrade=%t, live=%t: %+v", name, now, needs, liveRead, s)
					}
				}
			}
		}
	}
}

// TestMachineRunsToTheEnd drives Next the way the controller does (do the
// step, update the facts, ask again) from a schedulable node to the end of
// each path, and checks what was done and how it ended.
func TestMachineRunsToTheEnd(t *testing.T) {
	type world struct {
		f        Facts
		did      []Action
		uncordon bool
	}
	run := func(w *world, liveOurs bool, pods []Pod, job *JobFacts) Step {
		for range 10 {
			s := Next(w.f)
			w.did = append(w.did, s.Action)
			switch s.Action {
			case Cordon:
				w.f.Cordon.Unschedulable, w.f.Cordon.Ours = true, true
				w.f.Job.Observed = false
			case Observe:
				if job == nil {
					noJob(pods...)(&w.f)
				} else {
					w.f.Job = *job
				}
			case EvictPods:
				for i := range w.f.Pods {
					w.f.Pods[i].Eviction = Refused
				}
			case LabelNode:
				w.f.NodeVersion = s.Version
			case ReadCordon:
				live(liveOurs)(&w.f)
			default:
				w.uncordon = s.Uncordon
				return s
			}
		}
		t.Fatal("the machine did not settle")
		return Step{}
	}
	succeeded := &JobFacts{Observed: true, Exists: true, Name: job, Complete: true, Report: "itmanager.io/os-version=2.0"}

	w := &world{f: facts(upToDate)}
	if s := run(w, true, nil, succeeded); s.Action != Finish || !w.uncordon ||
		!reflect.DeepEqual(w.did, []Action{Observe, LabelNode, ReadCordon, Finish}) {
		t.Errorf("cordoned by us, succeeded: %v, uncordon=%t", w.did, w.uncordon)
	}
	w = &world{f: facts(func(f *Facts) { f.Cordon = CordonFacts{} }, upToDate)}
	if s := run(w, false, nil, succeeded); s.Action != Finish || w.uncordon ||
		!reflect.DeepEqual(w.did, []Action{Observe, LabelNode, ReadCordon, Finish}) {
		t.Errorf("uncordoned already (our finish not yet in the cache), succeeded: %v, uncordon=%t; want no second cordon", w.did, w.uncordon)
	}
	w = &world{f: facts(someoneElses, upToDate)}
	if s := run(w, false, nil, succeeded); s.Action != Finish || w.uncordon {
		t.Errorf("cordoned by someone else, succeeded: %v, uncordon=%t", w.did, w.uncordon)
	}
	w = &world{f: facts(at(time.Hour))}
	if s := run(w, true, []Pod{webPod}, nil); s.Action != Fail || s.Reason != itmv1.ReasonDrainTimeout || !w.uncordon ||
		!reflect.DeepEqual(w.did, []Action{Observe, EvictPods, ReadCordon, Fail}) {
		t.Errorf("cordoned by us, drain timeout: %v, uncordon=%t", w.did, w.uncordon)
	}
	w = &world{f: facts(func(f *Facts) { f.Cordon = CordonFacts{} }, at(time.Hour))}
	if s := run(w, true, []Pod{webPod}, nil); s.Action != Fail || s.Reason != itmv1.ReasonDrainTimeout || w.uncordon ||
		!reflect.DeepEqual(w.did, []Action{Observe, Fail}) {
		t.Errorf("given back after a drain timeout whose record was lost: %v, uncordon=%t; want no second cordon", w.did, w.uncordon)
	}
	w = &world{f: facts(someoneElses, at(time.Hour))}
	if s := run(w, false, []Pod{webPod}, nil); s.Action != Fail || w.uncordon {
		t.Errorf("cordoned by someone else, drain timeout: %v, uncordon=%t", w.did, w.uncordon)
	}
}
