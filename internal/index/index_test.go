package index

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// A lookup finds an object only if it asks for a key the object is indexed
// under: each builder must name the right index and spell the key as the
// key function does.
func TestLookupsAskForTheKeysObjectsAreIndexedUnder(t *testing.T) {
	policy := &itmv1.AccessPolicySpec{
		Subjects: itmv1.Subjects{Users: []string{"ada"}, Groups: []string{"eng"}, DeviceSelector: &metav1.LabelSelector{}},
		Destinations: []itmv1.Destination{
			{Namespaces: []string{"wiki", "docs"}},
			{NamespaceSelector: &metav1.LabelSelector{}},
		},
		KubernetesAccess: []itmv1.KubernetesAccess{{ClusterRole: "view"}, {ClusterRole: "edit", Namespaces: []string{"wiki"}}},
	}
	cases := []struct {
		name   string
		lookup client.MatchingFields
		field  string
		keys   []string
	}{
		{"user", PoliciesBySubject(UserKey("ada")), PolicySubjectField, PolicySubjectKeys(policy.Subjects)},
		{"group", PoliciesBySubject(GroupKey("eng")), PolicySubjectField, PolicySubjectKeys(policy.Subjects)},
		{"device selector", PoliciesBySubject(KeyDeviceSelector), PolicySubjectField, PolicySubjectKeys(policy.Subjects)},
		{"named namespace", PoliciesByNamespace(NamespaceKey("docs")), PolicyNamespaceField, PolicyNamespaceKeys(policy)},
		{"namespace events reach a named namespace", PoliciesByNamespace(NamespaceEventKeys("wiki")[0]), PolicyNamespaceField, PolicyNamespaceKeys(policy)},
		{"namespace events reach selectors", PoliciesByNamespace(NamespaceEventKeys("new")[1]), PolicyNamespaceField, PolicyNamespaceKeys(policy)},
		{"namespace events reach cluster-wide roles", PoliciesByNamespace(NamespaceEventKeys("new")[2]), PolicyNamespaceField, PolicyNamespaceKeys(policy)},
		{"node", DevicesOnNode("n1"), DeviceNodeNameField, DeviceNodeNameKeys(&itmv1.Device{Spec: itmv1.DeviceSpec{NodeName: "n1"}})},
		{"assignee", DevicesOf("ada"), DeviceAssigneeField, DeviceAssigneeKeys(&itmv1.Device{Spec: itmv1.DeviceSpec{Assignee: "ada"}})},
		{"default provider", RequestsOfProvider(KeyDefaultProvider), OnboardingProviderField, OnboardingProviderKeys(&itmv1.OnboardingRequest{})},
		{"waiting", RequestsWaitingForDevices(), OnboardingWaitingField, OnboardingWaitingKeys(&itmv1.OnboardingRequest{Status: itmv1.OnboardingRequestStatus{
			Conditions: []metav1.Condition{{Type: itmv1.OnboardingConditionDevicesAssigned, Status: metav1.ConditionFalse}}}})},
		{"group member", RequestsInGroup("eng"), OnboardingGroupField, []string{"eng"}},
		{"address", DevicesClaiming("10.0.0.1"), DeviceAddressField, []string{"10.0.0.1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if len(c.lookup) != 1 {
				t.Fatalf("lookup %v selects by %d fields, want 1", c.lookup, len(c.lookup))
			}
			key, ok := c.lookup[c.field]
			if !ok {
				t.Fatalf("lookup %v does not use index %q", c.lookup, c.field)
			}
			if !slices.Contains(c.keys, key) {
				t.Fatalf("lookup key %q is not among the object's keys %q", key, c.keys)
			}
		})
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
