package controllers_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

var nameSeq atomic.Int32

func uniqueName(prefix string) string { return fmt.Sprintf("%s-%d", prefix, nameSeq.Add(1)) }

func mustPrefixes(cidrs ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		out = append(out, netip.MustParsePrefix(c))
	}
	return out
}

// agentDevice creates a laptop with an enrolled agent.
func agentDevice(mutate func(*itmv1.Device)) *itmv1.Device {
	GinkgoHelper()
	d := &itmv1.Device{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("lt")},
		Spec: itmv1.DeviceSpec{
			Class: itmv1.DeviceClassLaptop,
			OS:    &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "24.04"},
			Agent: &itmv1.AgentSpec{Enabled: true},
		},
	}
	if mutate != nil {
		mutate(d)
	}
	Expect(k8s.Create(ctx, d)).To(Succeed())
	return d
}

// enrolment waits for the device's enrolment Secret and returns its data.
func enrolment(name string) map[string][]byte {
	GinkgoHelper()
	secret := &corev1.Secret{}
	Eventually(func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: testenv.DevicesNamespace, Name: name + "-agent"}, secret)
	}).Should(Succeed())
	return secret.Data
}

// tokenOf waits until the device's token is enrolled end to end: in the
// Secret and, as its hash, on the Lease.
func tokenOf(name string) string {
	GinkgoHelper()
	var token string
	Eventually(func(g Gomega) {
		data := enrolment(name)
		token = string(data[checkin.SecretKeyToken])
		g.Expect(token).NotTo(BeEmpty())
		lease := leaseOf(name)
		g.Expect(lease).NotTo(BeNil())
		g.Expect(lease.Annotations[checkin.AnnotationTokenHash]).To(Equal(checkin.HashToken(token)))
		cached := &coordinationv1.Lease{}
		g.Expect(managerCache.Get(ctx, client.ObjectKeyFromObject(lease), cached)).To(Succeed())
		g.Expect(cached.Annotations[checkin.AnnotationTokenHash]).To(Equal(checkin.HashToken(token)))
	}).Should(Succeed())
	return token
}

// updateAs changes the cluster-scoped object name as c, retrying when
// someone (a controller's status write) got there first, and returns the
// last error, admission refusals included.
func updateAs[T any, P interface {
	*T
	client.Object
}](c client.Client, name string, mutate func(P)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj := P(new(T))
		if err := c.Get(ctx, types.NamespacedName{Name: name}, obj); err != nil {
			return err
		}
		mutate(obj)
		return c.Update(ctx, obj)
	})
}

// updateDevice changes a Device's spec or metadata as the admin.
func updateDevice(name string, mutate func(*itmv1.Device)) {
	GinkgoHelper()
	Expect(updateAs(k8s, name, mutate)).To(Succeed())
}

type checkInResult struct {
	code int
	body map[string]any
}

func (r checkInResult) String() string { return fmt.Sprintf("%d %v", r.code, r.body) }

func postRaw(name, token, contentType string, body []byte) checkInResult {
	GinkgoHelper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, checkinURL+checkin.PathPrefix+name+"/checkin", bytes.NewReader(body))
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	out := checkInResult{code: resp.StatusCode}
	Expect(json.Unmarshal(data, &out.body)).To(Succeed(), string(data))
	return out
}

// post checks in as an agent would: never sooner than the minimum interval
// after the previous check-in of the same device (postRaw does not wait).
func post(name, token string, req checkin.Request) checkInResult {
	GinkgoHelper()
	answered := paceCheckIn(name)
	defer answered()
	body, err := json.Marshal(req)
	Expect(err).NotTo(HaveOccurred())
	return postRaw(name, token, "application/json", body)
}

func facts(addrs ...string) checkin.Facts {
	return checkin.Facts{OSVersion: "24.04", Hostname: "jdoe-laptop", Addresses: addrs, DiskEncrypted: ptr.To(true), AgentVersion: "v0.1.0"}
}

func getDevice(name string) *itmv1.Device {
	GinkgoHelper()
	d := &itmv1.Device{}
	Expect(k8s.Get(ctx, types.NamespacedName{Name: name}, d)).To(Succeed())
	return d
}

func conditionOf(name, condType string) func() metav1.ConditionStatus {
	return func() metav1.ConditionStatus {
		d := &itmv1.Device{}
		if err := k8s.Get(ctx, types.NamespacedName{Name: name}, d); err != nil {
			return ""
		}
		if c := meta.FindStatusCondition(d.Status.Conditions, condType); c != nil {
			return c.Status
		}
		return ""
	}
}

func leaseOf(name string) *coordinationv1.Lease {
	lease := &coordinationv1.Lease{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: testenv.DevicesNamespace, Name: name}, lease); err != nil {
		return nil
	}
	return lease
}

// impersonate returns a client that acts as user, whom a new ClusterRole
// with rules is bound to.
func impersonate(user string, rules ...rbacv1.PolicyRule) client.Client {
	GinkgoHelper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("role")}, Rules: rules}
	Expect(k8s.Create(ctx, role)).To(Succeed())
	Expect(k8s.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	})).To(Succeed())
	// The API server's RBAC authorizer learns of the binding from a watch:
	// wait until it grants what the role says, or the spec's first request
	// may be refused for a reason it does not test.
	for _, rule := range rules {
		waitRuleInForce(user, "", rule)
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	Expect(err).NotTo(HaveOccurred())
	return c
}

// waitRuleInForce waits until user is allowed the first verb on the first
// resource (or URL) of rule, in namespace ns ("" for cluster-wide): the
// API server's authorizer learns of new RBAC objects from a watch.
func waitRuleInForce(user, ns string, rule rbacv1.PolicyRule) {
	GinkgoHelper()
	if len(rule.Verbs) == 0 {
		return
	}
	spec := authorizationv1.SubjectAccessReviewSpec{User: user}
	switch {
	case len(rule.NonResourceURLs) > 0:
		spec.NonResourceAttributes = &authorizationv1.NonResourceAttributes{Path: rule.NonResourceURLs[0], Verb: rule.Verbs[0]}
	case len(rule.Resources) > 0:
		attrs := &authorizationv1.ResourceAttributes{Namespace: ns, Verb: rule.Verbs[0], Resource: rule.Resources[0]}
		if len(rule.APIGroups) > 0 && rule.APIGroups[0] != "*" {
			attrs.Group = rule.APIGroups[0]
		}
		if r, sub, ok := strings.Cut(attrs.Resource, "/"); ok {
			attrs.Resource, attrs.Subresource = r, sub
		}
		if len(rule.ResourceNames) > 0 {
			attrs.Name = rule.ResourceNames[0]
		}
		spec.ResourceAttributes = attrs
	default:
		return
	}
	Eventually(func() bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: spec}
		Expect(k8s.Create(ctx, sar)).To(Succeed())
		return sar.Status.Allowed
	}).Should(BeTrue(), "the role granted to %s in force", user)
}

// gauge reads a gauge (or counter) the manager exports, by name and
// labels; -1 when it does not exist.
func gauge(name string, labels map[string]string) float64 {
	families, err := ctrlmetrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := 0
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
					match++
				}
			}
			if match == len(labels) {
				if m.Counter != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// grantIn gives user the rules in namespace ns only (a Role and its
// RoleBinding), on top of what impersonate bound cluster-wide.
func grantIn(ns, user string, rules ...rbacv1.PolicyRule) {
	GinkgoHelper()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: uniqueName("role")}, Rules: rules}
	Expect(k8s.Create(ctx, role)).To(Succeed())
	Expect(k8s.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	})).To(Succeed())
	DeferCleanup(func() { _ = k8s.Delete(ctx, role) })
	// The spec's next request must see the grant, or a positive control
	// could fail for a reason it does not test.
	for _, rule := range rules {
		waitRuleInForce(user, ns, rule)
	}
}
