package index

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// registered records what Setup registers: field name -> the object type
// and the key function the cache indexes that field with.
type registered map[string]struct {
	obj  client.Object
	keys client.IndexerFunc
}

func (r registered) IndexField(_ context.Context, obj client.Object, field string, keys client.IndexerFunc) error {
	if _, dup := r[field]; dup {
		return fmt.Errorf("field %q registered twice", field)
	}
	r[field] = struct {
		obj  client.Object
		keys client.IndexerFunc
	}{obj, keys}
	return nil
}

// A lookup finds an object only if it asks for a key the function Setup
// registers for the lookup's index puts the object under: each builder must
// name the right index, spell the key as the key function does, and Setup
// must wire each field to its own key function and object type.
func TestLookupsAskForTheKeysSetupIndexesObjectsUnder(t *testing.T) {
	indexes := registered{}
	if err := Setup(context.Background(), indexes); err != nil {
		t.Fatal(err)
	}
	policy := &itmv1.AccessPolicy{Spec: itmv1.AccessPolicySpec{
		Subjects: itmv1.Subjects{Users: []string{"ada"}, Groups: []string{"eng"}, DeviceSelector: &metav1.LabelSelector{}},
		Destinations: []itmv1.Destination{
			{Namespaces: []string{"wiki", "docs"}},
			{NamespaceSelector: &metav1.LabelSelector{}},
		},
		KubernetesAccess: []itmv1.KubernetesAccess{{ClusterRole: "view"}, {ClusterRole: "edit", Namespaces: []string{"wiki"}}},
	}}
	cases := []struct {
		name   string
		lookup client.MatchingFields
		field  string
		obj    client.Object
	}{
		{"user", PoliciesBySubject(UserKey("ada")), PolicySubjectField, policy},
		{"group", PoliciesBySubject(GroupKey("eng")), PolicySubjectField, policy},
		{"device selector", PoliciesBySubject(KeyDeviceSelector), PolicySubjectField, policy},
		{"named namespace", PoliciesByNamespace(NamespaceKey("docs")), PolicyNamespaceField, policy},
		{"namespace events reach a named namespace", PoliciesByNamespace(NamespaceEventKeys("wiki")[0]), PolicyNamespaceField, policy},
		{"namespace events reach selectors", PoliciesByNamespace(NamespaceEventKeys("new")[1]), PolicyNamespaceField, policy},
		{"namespace events reach cluster-wide roles", PoliciesByNamespace(NamespaceEventKeys("new")[2]), PolicyNamespaceField, policy},
		{"node", DevicesOnNode("n1"), DeviceNodeNameField, &itmv1.Device{Spec: itmv1.DeviceSpec{NodeName: "n1"}}},
		{"assignee", DevicesOf("ada"), DeviceAssigneeField, &itmv1.Device{Spec: itmv1.DeviceSpec{Assignee: "ada"}}},
		{"default provider", RequestsOfProvider(KeyDefaultProvider), OnboardingProviderField, &itmv1.OnboardingRequest{}},
		{"waiting", RequestsWaitingForDevices(), OnboardingWaitingField, &itmv1.OnboardingRequest{Status: itmv1.OnboardingRequestStatus{
			Conditions: []metav1.Condition{{Type: itmv1.OnboardingConditionDevicesAssigned, Status: metav1.ConditionFalse}}}}},
		{"group member", RequestsInGroup("eng"), OnboardingGroupField, &itmv1.OnboardingRequest{Spec: itmv1.OnboardingRequestSpec{Groups: []string{"ops", "eng"}}}},
	}
	untested := maps.Clone(indexes)
	for _, c := range cases {
		delete(untested, c.field)
		t.Run(c.name, func(t *testing.T) {
			if len(c.lookup) != 1 {
				t.Fatalf("lookup %v selects by %d fields, want 1", c.lookup, len(c.lookup))
			}
			key, ok := c.lookup[c.field]
			if !ok {
				t.Fatalf("lookup %v does not use index %q", c.lookup, c.field)
			}
			ix, ok := indexes[c.field]
			if !ok {
				t.Fatalf("Setup registers no index %q", c.field)
			}
			if got, want := reflect.TypeOf(ix.obj), reflect.TypeOf(c.obj); got != want {
				t.Fatalf("Setup registers index %q on %v, want %v", c.field, got, want)
			}
			if keys := ix.keys(c.obj); !slices.Contains(keys, key) {
				t.Fatalf("lookup key %q is not among the keys %q Setup's function for %q indexes the object under", key, keys, c.field)
			}
		})
	}
	for field := range untested {
		t.Errorf("no row looks up index %q that Setup registers", field)
	}
}

func TestKeysOfObjects(t *testing.T) {
	cases := []struct {
		name      string
		got, want []string
	}{
		{"no node, no key", DeviceNodeNameKeys(&itmv1.Device{}), nil},
		{"no assignee, no key", DeviceAssigneeKeys(&itmv1.Device{}), nil},
		{"named providers and accounts, sorted once", OnboardingProviderKeys(&itmv1.OnboardingRequest{
			Spec:   itmv1.OnboardingRequestSpec{AccountProviders: []string{"ldap", "k8s"}},
			Status: itmv1.OnboardingRequestStatus{Accounts: []itmv1.AccountStatus{{Provider: "old"}, {Provider: "k8s"}}}}),
			[]string{"k8s", "ldap", "old"}},
		{"fixed defaults replace the default key", OnboardingProviderKeys(&itmv1.OnboardingRequest{
			Status: itmv1.OnboardingRequestStatus{DefaultProviders: &itmv1.DefaultProviders{Names: []string{"k8s"}}}}),
			[]string{"k8s"}},
		{"not waiting while DevicesAssigned is not False", OnboardingWaitingKeys(&itmv1.OnboardingRequest{Status: itmv1.OnboardingRequestStatus{
			Conditions: []metav1.Condition{{Type: itmv1.OnboardingConditionDevicesAssigned, Status: metav1.ConditionTrue}}}}), nil},
		{"subjects", PolicySubjectKeys(itmv1.Subjects{Users: []string{"ada"}, Groups: []string{"eng"}}), []string{"user:ada", "group:eng"}},
		{"namespaces sorted and deduplicated", PolicyNamespaceKeys(&itmv1.AccessPolicySpec{
			Destinations:     []itmv1.Destination{{Namespaces: []string{"wiki"}}, {NamespaceSelector: &metav1.LabelSelector{}}},
			KubernetesAccess: []itmv1.KubernetesAccess{{ClusterRole: "view"}, {ClusterRole: "edit", Namespaces: []string{"wiki"}}}}),
			[]string{"allNamespaces", "namespaceSelector", "ns:wiki"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !slices.Equal(c.got, c.want) {
				t.Fatalf("keys %q, want %q", c.got, c.want)
			}
		})
	}
}
