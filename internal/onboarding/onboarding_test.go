package onboarding

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var now = time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)

func at(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(d)); return &t }

func cond(t string) metav1.Condition {
	return metav1.Condition{Type: t, Status: metav1.ConditionTrue, Reason: "ByTest", Message: "m"}
}

func TestDecide(t *testing.T) {
	approved := []metav1.Condition{cond(itmv1.OnboardingConditionApproved)}
	tests := []struct {
		name      string
		mutate    func(r *itmv1.OnboardingRequest)
		wantStage Stage
		wantNext  time.Time
	}{
		{"approval required by default", func(r *itmv1.OnboardingRequest) {}, AwaitingApproval, time.Time{}},
		{"explicitly required", func(r *itmv1.OnboardingRequest) { r.Spec.ApprovalRequired = ptr.To(true) }, AwaitingApproval, time.Time{}},
		{"awaiting approval still offboards at endDate", func(r *itmv1.OnboardingRequest) { r.Spec.EndDate = at(time.Hour) }, AwaitingApproval, now.Add(time.Hour)},
		{"approved", func(r *itmv1.OnboardingRequest) { r.Status.Conditions = approved }, Active, time.Time{}},
		{"not required", func(r *itmv1.OnboardingRequest) { r.Spec.ApprovalRequired = ptr.To(false) }, Active, time.Time{}},
		{"denied wins over not required", func(r *itmv1.OnboardingRequest) {
			r.Spec.ApprovalRequired = ptr.To(false)
			r.Status.Conditions = []metav1.Condition{cond(itmv1.OnboardingConditionDenied)}
		}, Denied, time.Time{}},
		{"approval False is not approval", func(r *itmv1.OnboardingRequest) {
			c := cond(itmv1.OnboardingConditionApproved)
			c.Status = metav1.ConditionFalse
			r.Status.Conditions = []metav1.Condition{c}
		}, AwaitingApproval, time.Time{}},
		{"before start", func(r *itmv1.OnboardingRequest) { r.Status.Conditions = approved; r.Spec.StartDate = at(2 * time.Hour) }, Scheduled, now.Add(2 * time.Hour)},
		{"at start", func(r *itmv1.OnboardingRequest) { r.Status.Conditions = approved; r.Spec.StartDate = at(0) }, Active, time.Time{}},
		{"active until end", func(r *itmv1.OnboardingRequest) {
			r.Status.Conditions = approved
			r.Spec.StartDate, r.Spec.EndDate = at(-time.Hour), at(time.Minute)
		}, Active, now.Add(time.Minute)},
		{"at end", func(r *itmv1.OnboardingRequest) { r.Status.Conditions = approved; r.Spec.EndDate = at(0) }, Offboard, time.Time{}},
		{"offboard flag", func(r *itmv1.OnboardingRequest) { r.Status.Conditions = approved; r.Spec.Offboard = true }, Offboard, time.Time{}},
		{"deleted", func(r *itmv1.OnboardingRequest) { r.DeletionTimestamp = at(0) }, Offboard, time.Time{}},
		{"offboarding is final though endDate moved", func(r *itmv1.OnboardingRequest) {
			r.Status.Conditions = approved
			r.Spec.EndDate = at(time.Hour)
			r.Status.Phase = itmv1.OnboardingPhaseOffboarded
		}, Offboard, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: "ada"}}
			tt.mutate(r)
			d := Decide(r, now)
			if d.Stage != tt.wantStage || !d.Next.Equal(tt.wantNext) {
				t.Fatalf("Decide = %s next %v (%s), want %s next %v", d.Stage, d.Next, d.Why, tt.wantStage, tt.wantNext)
			}
		})
	}
}

func TestAccounts(t *testing.T) {
	r := &itmv1.OnboardingRequest{}
	r.Status.Accounts = []itmv1.AccountStatus{{Provider: "old", State: itmv1.AccountStateProvisioned}, {Provider: "ldap", State: itmv1.AccountStateDisabled}}
	fixed := &itmv1.DefaultProviders{Names: []string{"kube", "ldap"}}
	tests := []struct {
		name     string
		named    []string
		defaults *itmv1.DefaultProviders
		stage    Stage
		want     []AccountWant
	}{
		{"the recorded defaults when none named, removed ones offboarded", nil, fixed, Active,
			[]AccountWant{{"kube", WantEnabled}, {"ldap", WantEnabled}, {"old", WantGone}}},
		{"no defaults before they are fixed: nothing new, the recorded undone", nil, nil, Active,
			[]AccountWant{{"ldap", WantGone}, {"old", WantGone}}},
		{"defaults fixed empty stay empty", nil, &itmv1.DefaultProviders{Names: []string{}}, Active,
			[]AccountWant{{"ldap", WantGone}, {"old", WantGone}}},
		{"named replace defaults", []string{"ldap"}, fixed, Scheduled,
			[]AccountWant{{"ldap", WantDisabled}, {"old", WantGone}}},
		{"offboard visits named and recorded", []string{"kube"}, nil, Offboard,
			[]AccountWant{{"kube", WantGone}, {"ldap", WantGone}, {"old", WantGone}}},
		{"offboard visits the recorded defaults", nil, fixed, Offboard,
			[]AccountWant{{"kube", WantGone}, {"ldap", WantGone}, {"old", WantGone}}},
		{"awaiting approval creates nothing, undoes the recorded", []string{"kube"}, nil, AwaitingApproval,
			[]AccountWant{{"ldap", WantGone}, {"old", WantGone}}},
		{"denied creates nothing", nil, fixed, Denied,
			[]AccountWant{{"ldap", WantGone}, {"old", WantGone}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := r.DeepCopy()
			r.Spec.AccountProviders = tt.named
			r.Status.DefaultProviders = tt.defaults
			if got := Accounts(r, tt.stage); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Accounts = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDefaultsToFix(t *testing.T) {
	many := make([]string, MaxDefaultProviders+1)
	for i := range many {
		many[i] = fmt.Sprintf("p%02d", i)
	}
	tests := []struct {
		name     string
		named    []string
		recorded *itmv1.DefaultProviders
		stage    Stage
		current  []string
		want     []string
		fix      bool
		err      string
	}{
		{"approved (Active): the current defaults, sorted", nil, nil, Active, []string{"ldap", "kube"}, []string{"kube", "ldap"}, true, ""},
		{"approved before startDate (Scheduled): fixed too", nil, nil, Scheduled, []string{"kube"}, []string{"kube"}, true, ""},
		{"no default at approval: fixed as empty, not left open", nil, nil, Active, nil, []string{}, true, ""},
		{"already fixed: a provider made default later is ignored", nil, &itmv1.DefaultProviders{Names: []string{"kube"}}, Active, []string{"kube", "team-x"}, nil, false, ""},
		{"already fixed as empty stays empty", nil, &itmv1.DefaultProviders{Names: []string{}}, Active, []string{"team-x"}, nil, false, ""},
		{"awaiting approval: not yet", nil, nil, AwaitingApproval, []string{"kube"}, nil, false, ""},
		{"denied: never", nil, nil, Denied, []string{"kube"}, nil, false, ""},
		{"offboarding before approval: never", nil, nil, Offboard, []string{"kube"}, nil, false, ""},
		{"names its providers: no defaults", []string{"ldap"}, nil, Active, []string{"kube"}, nil, false, ""},
		{"more defaults than status holds: refused, nothing fixed", nil, nil, Active, many, nil, false, "17 AccountProviders are marked default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &itmv1.OnboardingRequest{}
			r.Spec.AccountProviders = tt.named
			r.Status.DefaultProviders = tt.recorded
			got, fix, err := DefaultsToFix(r, tt.stage, tt.current)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || fix {
					t.Fatalf("DefaultsToFix = %v %v %v, want error %q", got, fix, err, tt.err)
				}
				return
			}
			if err != nil || fix != tt.fix || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("DefaultsToFix = %#v %v %v, want %#v %v", got, fix, err, tt.want, tt.fix)
			}
		})
	}
}

func device(name string, class itmv1.DeviceClass, assignee string, lc itmv1.DeviceLifecycle, lbls map[string]string) itmv1.Device {
	return itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
		Spec: itmv1.DeviceSpec{Class: class, Assignee: assignee, Lifecycle: lc}}
}

func TestDevices(t *testing.T) {
	mac := map[string]string{"os": "mac"}
	inventory := []itmv1.Device{
		device("lt-3", itmv1.DeviceClassLaptop, "", itmv1.DeviceLifecycleActive, mac),
		device("lt-1", itmv1.DeviceClassLaptop, "bob", "", mac),
		device("lt-2", itmv1.DeviceClassLaptop, "", itmv1.DeviceLifecycleRetired, mac),
		device("lt-4", itmv1.DeviceClassLaptop, "", "", nil),
		device("ph-1", itmv1.DeviceClassPhone, "ada", "", nil),
		device("ph-2", itmv1.DeviceClassPhone, "", "", nil),
		device("srv", itmv1.DeviceClassServer, "", itmv1.DeviceLifecycleLost, nil),
		device("node-w1", itmv1.DeviceClassNode, "", itmv1.DeviceLifecycleActive, nil),
	}
	laptop := itmv1.DeviceRequest{Class: itmv1.DeviceClassLaptop, Selector: &metav1.LabelSelector{MatchLabels: mac}}
	phone := itmv1.DeviceRequest{Class: itmv1.DeviceClassPhone}
	tests := []struct {
		name     string
		requests []itmv1.DeviceRequest
		recorded []string
		stage    Stage
		plan     DevicePlan
	}{
		{"class with selector picks an available device", []itmv1.DeviceRequest{laptop}, nil, Active,
			DevicePlan{Assign: []Assignment{{0, "lt-3"}}}},
		{"a device already held satisfies its class", []itmv1.DeviceRequest{phone}, nil, Active,
			DevicePlan{Keep: []string{"ph-1"}}},
		{"two requests of one class take two devices", []itmv1.DeviceRequest{phone, phone}, []string{"ph-1"}, Active,
			DevicePlan{Keep: []string{"ph-1"}, Assign: []Assignment{{1, "ph-2"}}}},
		{"named, taken by someone else", []itmv1.DeviceRequest{{Name: "lt-1"}}, nil, Active,
			DevicePlan{Unmet: []string{"spec.devices[0]: Device lt-1 is assigned to bob"}}},
		{"named, retired", []itmv1.DeviceRequest{{Name: "lt-2"}}, nil, Active,
			DevicePlan{Unmet: []string{"spec.devices[0]: Device lt-2 is Retired, not Active"}}},
		{"named, missing", []itmv1.DeviceRequest{{Name: "nope"}}, nil, Active,
			DevicePlan{Unmet: []string{"spec.devices[0]: Device nope does not exist"}}},
		{"class exhausted", []itmv1.DeviceRequest{laptop, laptop}, nil, Active,
			DevicePlan{Assign: []Assignment{{0, "lt-3"}}, Unmet: []string{"spec.devices[1]: no Active, unassigned Laptop Device matches the selector"}}},
		{"lost is never assigned", []itmv1.DeviceRequest{{Class: itmv1.DeviceClassServer}}, nil, Active,
			DevicePlan{Unmet: []string{"spec.devices[0]: no Active, unassigned Server Device"}}},
		{"a Node device is never picked by name", []itmv1.DeviceRequest{{Name: "node-w1"}}, nil, Active,
			DevicePlan{Unmet: []string{"spec.devices[0]: Device node-w1 is a Node; Node devices are never assigned to a person"}}},
		{"a Node device is never picked by class", []itmv1.DeviceRequest{{Class: itmv1.DeviceClassNode}}, nil, Active,
			DevicePlan{Unmet: []string{"spec.devices[0].class: Node devices are never assigned to a person"}}},
		{"a recorded device no longer requested is released", nil, []string{"ph-1"}, Active,
			DevicePlan{Release: []string{"ph-1"}}},
		{"offboarding releases the person's devices only", []itmv1.DeviceRequest{phone}, []string{"lt-1", "gone"}, Offboard,
			DevicePlan{Release: []string{"ph-1"}}},
		{"while active, a device the person holds without a record and no request wants is left alone", nil, nil, Active,
			DevicePlan{}},
		{"awaiting approval assigns nothing and gives back what it recorded", []itmv1.DeviceRequest{phone, laptop}, []string{"ph-1"}, AwaitingApproval,
			DevicePlan{Release: []string{"ph-1"}}},
		{"awaiting approval keeps a device the person holds without a record", []itmv1.DeviceRequest{{Name: "ph-1"}}, nil, AwaitingApproval,
			DevicePlan{}},
		{"denied releases like offboarding", nil, nil, Denied,
			DevicePlan{Release: []string{"ph-1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Devices("ada", tt.requests, tt.recorded, inventory, tt.stage)
			if !reflect.DeepEqual(got, tt.plan) {
				t.Fatalf("Devices =\n%+v\nwant\n%+v", got, tt.plan)
			}
		})
	}
}

func TestDevicesSpreadOverAPool(t *testing.T) {
	var pool []itmv1.Device
	for i := range 20 {
		pool = append(pool, device(fmt.Sprintf("lt-%02d", i), itmv1.DeviceClassLaptop, "", "", nil))
	}
	req := []itmv1.DeviceRequest{{Class: itmv1.DeviceClassLaptop}}
	picked := map[string]bool{}
	for u := range 10 {
		user := fmt.Sprintf("person-%d", u)
		plan := Devices(user, req, nil, pool, Active)
		if len(plan.Assign) != 1 {
			t.Fatalf("%s: %+v", user, plan)
		}
		again := Devices(user, req, nil, pool, Active)
		if !reflect.DeepEqual(plan, again) {
			t.Fatalf("%s: not deterministic: %+v then %+v", user, plan, again)
		}
		picked[plan.Assign[0].Device] = true
	}
	if len(picked) < 5 {
		t.Fatalf("10 people racing for a pool of 20 want only %d distinct devices: %v", len(picked), picked)
	}
}

func TestNotTheFixedDefault(t *testing.T) {
	fixed := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	provider := func(created time.Time) *itmv1.AccountProvider {
		return &itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: "corp", CreationTimestamp: metav1.NewTime(created)}}
	}
	withDefaults := func(r *itmv1.OnboardingRequest) {
		r.Status.DefaultProviders = &itmv1.DefaultProviders{Names: []string{"corp"}, FixedAt: metav1.NewTime(fixed)}
	}
	tests := []struct {
		name    string
		mutate  func(*itmv1.OnboardingRequest)
		created time.Time
		refused bool
	}{
		{"a default older than the record serves the request", withDefaults, fixed.Add(-time.Hour), false},
		{"a default created in the second the record was made serves it", withDefaults, fixed, false},
		{"a provider recreated under the name after the record does not", withDefaults, fixed.Add(time.Minute), true},
		{"a request naming its providers is not judged here (approval covers the names)", func(r *itmv1.OnboardingRequest) {
			withDefaults(r)
			r.Spec.AccountProviders = []string{"corp"}
		}, fixed.Add(time.Minute), false},
		{"before the defaults are fixed nothing is refused", func(*itmv1.OnboardingRequest) {}, fixed.Add(time.Minute), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: "ada"}}
			tt.mutate(r)
			got := NotTheFixedDefault(r, provider(tt.created))
			if (got != "") != tt.refused {
				t.Fatalf("NotTheFixedDefault = %q, want refused=%v", got, tt.refused)
			}
			if tt.refused && !strings.Contains(got, "inherits none of its requests") {
				t.Fatalf("message %q does not say why", got)
			}
		})
	}
}
