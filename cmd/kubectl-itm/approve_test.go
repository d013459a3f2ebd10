package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	r := &itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: "amara.okafor", Generation: 3}}
	c := fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(r).WithStatusSubresource(r).Build()

	var out bytes.Buffer
	if err := decide(context.Background(), c, "amara.okafor", itmv1.OnboardingConditionDenied, "NoContract", "no signed contract yet", now, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out.String(), "onboardingrequest.itmanager.io/amara.okafor denied (generation 3)\n") {
		t.Fatalf("output %q", out.String())
	}
	got := &itmv1.OnboardingRequest{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(r), got); err != nil {
		t.Fatal(err)
	}
	cond := meta.FindStatusCondition(got.Status.Conditions, itmv1.OnboardingConditionDenied)
	if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != "NoContract" || cond.Message != "no signed contract yet" ||
		cond.ObservedGeneration != 3 || !cond.LastTransitionTime.Time.Equal(now) {
		t.Fatalf("condition %+v", cond)
	}

	// A decision is final: approving afterwards is refused before any write.
	err := decide(context.Background(), c, "amara.okafor", itmv1.OnboardingConditionApproved, "Approved", "", now, &out)
	if err == nil || !strings.Contains(err.Error(), "already Denied") {
		t.Fatalf("second decision: %v", err)
	}
	if err := decide(context.Background(), c, "nobody", itmv1.OnboardingConditionApproved, "Approved", "", now, &out); err == nil {
		t.Fatal("deciding a missing request succeeded")
	}
}

func TestApproveShowsWhatItApproves(t *testing.T) {
	start := metav1.NewTime(time.Date(2027, 1, 4, 8, 0, 0, 0, time.UTC))
	r := &itmv1.OnboardingRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "amara.okafor", Generation: 2, Annotations: map[string]string{itmv1.AnnotationRequestedBy: "hr-bot"}},
		Spec: itmv1.OnboardingRequestSpec{
			Person: itmv1.Person{DisplayName: "Amara Okafor", Email: "amara@example.com", Title: "SRE", EmploymentType: itmv1.EmploymentTypeContractor},
			Groups: []string{"engineering", "oncall"},
			Devices: []itmv1.DeviceRequest{{Name: "lt-0042"},
				{Class: itmv1.DeviceClassPhone, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"os": "android"}}}},
			StartDate: &start,
		},
	}
	providers := []client.Object{
		&itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes, Default: true}},
		&itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: "corp-ldap"}, Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderLDAP, Default: true}},
		&itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: "lab"}, Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderLDAP}},
	}
	c := fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(append(providers, r)...).WithStatusSubresource(r).Build()
	var out bytes.Buffer
	if err := decide(context.Background(), c, r.Name, itmv1.OnboardingConditionApproved, "Approved", "", time.Now(), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Approving OnboardingRequest amara.okafor, generation 2, as it is now:",
		"Person:        Amara Okafor <amara@example.com> (SRE, Contractor)",
		"Requested by:  hr-bot",
		"Groups:        engineering, oncall",
		"Providers:     defaults, fixed at approval, now: corp-ldap, kubernetes",
		"Devices:       lt-0042, any Phone matching os=android",
		"Dates:         2027-01-04T08:00:00Z to open-ended",
		"onboardingrequest.itmanager.io/amara.okafor approved (generation 2)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestDecideRefusesAChangedRequest: the request changes between the read
// the decider is shown and the write; nothing is decided, and the error
// says what changed.
func TestDecideRefusesAChangedRequest(t *testing.T) {
	for name, tt := range map[string]struct {
		change func(*itmv1.OnboardingRequest)
		want   string
	}{
		"the spec changed": {func(o *itmv1.OnboardingRequest) {
			o.Spec.Groups = append(o.Spec.Groups, "admins")
			o.Generation = 4
		}, "its spec changed (generation 4, shown 3)"},
		"only the status changed": {func(o *itmv1.OnboardingRequest) {
			o.Annotations = map[string]string{"touched": "yes"}
		}, "its status or metadata changed (the spec shown, generation 3, is unchanged)"},
	} {
		t.Run(name, func(t *testing.T) {
			r := &itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: "amara.okafor", Generation: 3},
				Spec: itmv1.OnboardingRequestSpec{Person: itmv1.Person{DisplayName: "Amara Okafor", Email: "amara@example.com"}, Groups: []string{"engineering"}}}
			gets := 0
			c := fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(r).WithStatusSubresource(r).
				WithInterceptorFuncs(interceptor.Funcs{Get: func(ctx context.Context, inner client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					if err := inner.Get(ctx, key, obj, opts...); err != nil {
						return err
					}
					if o, ok := obj.(*itmv1.OnboardingRequest); ok {
						gets++
						if gets == 1 {
							// Someone changes the request right after it was read.
							changed := o.DeepCopy()
							tt.change(changed)
							if err := inner.Update(ctx, changed); err != nil {
								t.Fatal(err)
							}
						}
					}
					return nil
				}}).Build()
			var out bytes.Buffer
			err := decide(context.Background(), c, "amara.okafor", itmv1.OnboardingConditionApproved, "Approved", "", time.Now(), &out)
			if err == nil || !strings.Contains(err.Error(), "nothing was decided: the request changed after it was shown: "+tt.want) {
				t.Fatalf("decide = %v", err)
			}
			if gets != 2 {
				t.Fatalf("%d reads: the decision was retried or the change not explained", gets)
			}
			got := &itmv1.OnboardingRequest{}
			if err := c.Get(context.Background(), client.ObjectKeyFromObject(r), got); err != nil {
				t.Fatal(err)
			}
			if cond := meta.FindStatusCondition(got.Status.Conditions, itmv1.OnboardingConditionApproved); cond != nil {
				t.Fatalf("approved anyway: %+v", cond)
			}
			if strings.Contains(out.String(), "approved") {
				t.Fatalf("output claims an approval:\n%s", out.String())
			}
		})
	}
}
