package controllers_test

import (
	"encoding/json"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

var _ = Describe("Agent enrolment", func() {
	It("writes the enrolment Secret and the Lease, keeps only a hash, and revokes both when the agent is disabled", func() {
		d := agentDevice(nil)
		token := tokenOf(d.Name)
		data := enrolment(d.Name)
		Expect(string(data[checkin.SecretKeyURL])).To(Equal(checkinURL + "/v1/devices/" + d.Name + "/checkin"))
		Expect(string(data[checkin.SecretKeyCA])).To(ContainSubstring("BEGIN CERTIFICATE"))
		Expect(token).To(HaveLen(43), "256 random bits, base64url")

		lease := leaseOf(d.Name)
		Expect(lease.Spec.RenewTime).To(BeNil(), "created without a renew time")
		Expect(lease.OwnerReferences).To(ContainElement(HaveField("UID", d.UID)))
		for k, v := range lease.Annotations {
			Expect(v).NotTo(ContainSubstring(token), "annotation %s holds the token", k)
		}
		Expect(post(d.Name, token, checkin.Request{Sequence: 1, Facts: facts()}).code).To(Equal(200))

		By("disabling the agent")
		updateDevice(d.Name, func(d *itmv1.Device) { d.Spec.Agent.Enabled = false })
		Eventually(func() *corev1.Secret {
			s := &corev1.Secret{}
			if apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: testenv.DevicesNamespace, Name: d.Name + "-agent"}, s)) {
				return nil
			}
			return s
		}).Should(BeNil())
		Eventually(func() bool { return leaseOf(d.Name) == nil }).Should(BeTrue())
		Expect(post(d.Name, token, checkin.Request{Sequence: 2, Facts: facts()}).code).To(Equal(401))

		By("re-enrolling with a new token")
		updateDevice(d.Name, func(d *itmv1.Device) { d.Spec.Agent.Enabled = true })
		newToken := tokenOf(d.Name)
		Expect(newToken).NotTo(Equal(token))
		Expect(post(d.Name, token, checkin.Request{Sequence: 3, Facts: facts()}).code).To(Equal(401))
		Expect(post(d.Name, newToken, checkin.Request{Sequence: 3, Facts: facts()}).code).To(Equal(200))
	})

	It("brings url and ca.crt up to date in place, keeping the token", func() {
		d := agentDevice(nil)
		token := tokenOf(d.Name)
		// Pretend the Secret was written for a service that has moved.
		secret := &corev1.Secret{}
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: testenv.DevicesNamespace, Name: d.Name + "-agent"}, secret)).To(Succeed())
		secret.Annotations["itmanager.io/url"] = "https://old.example.com/v1/devices/" + d.Name + "/checkin"
		secret.Data[checkin.SecretKeyURL] = []byte(secret.Annotations["itmanager.io/url"])
		Expect(k8s.Update(ctx, secret)).To(Succeed())

		Eventually(func() string { return string(enrolment(d.Name)[checkin.SecretKeyURL]) }).
			Should(Equal(checkinURL + "/v1/devices/" + d.Name + "/checkin"))
		Expect(string(enrolment(d.Name)[checkin.SecretKeyToken])).To(Equal(token))
		Expect(post(d.Name, token, checkin.Request{Sequence: 1, Facts: facts()}).code).To(Equal(200))
	})

	It("stops accepting the token at once when the Device is deleted", func() {
		d := agentDevice(nil)
		token := tokenOf(d.Name)
		Expect(post(d.Name, token, checkin.Request{Sequence: 1, Facts: facts()}).code).To(Equal(200))
		Expect(k8s.Delete(ctx, d)).To(Succeed())
		Eventually(func() int { return post(d.Name, token, checkin.Request{Sequence: 2, Facts: facts()}).code }).
			WithTimeout(2 * time.Second).Should(Equal(401))
		Eventually(func() bool { return leaseOf(d.Name) == nil }).Should(BeTrue())
	})

	It("never lets a later Device of the same name inherit the earlier one's token", func() {
		d := agentDevice(nil)
		token := tokenOf(d.Name)
		Expect(k8s.Delete(ctx, d)).To(Succeed())
		Eventually(func() bool { return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(d), &itmv1.Device{})) }).Should(BeTrue())
		again := agentDevice(func(n *itmv1.Device) { n.Name = d.Name })
		newToken := tokenOf(again.Name)
		Expect(newToken).NotTo(Equal(token))
		Expect(post(d.Name, token, checkin.Request{Sequence: 9, Facts: facts()}).code).To(Equal(401))
	})
})

var _ = Describe("Check-in service", func() {
	var d *itmv1.Device
	var token string
	BeforeEach(func() {
		d = agentDevice(nil)
		token = tokenOf(d.Name)
	})

	It("renews the Lease with the server's clock, records facts once, and turns CheckedIn on", func() {
		before := time.Now()
		res := post(d.Name, token, checkin.Request{Sequence: 1, Facts: facts("10.0.0.7", "192.168.1.20", "fd00::7")})
		Expect(res.code).To(Equal(200), res.String())
		Expect(res.body["nextCheckInSeconds"]).To(BeEquivalentTo(1))
		Expect(res.body["warnings"]).To(ConsistOf(ContainSubstring("192.168.1.20 is outside the allowed ranges")))

		lease := leaseOf(d.Name)
		Expect(lease.Spec.RenewTime.Time).To(BeTemporally(">=", before.Add(-time.Second)))
		Expect(*lease.Spec.LeaseDurationSeconds).To(BeEquivalentTo(staleAfter / time.Second))
		Eventually(conditionOf(d.Name, itmv1.DeviceConditionCheckedIn)).Should(Equal(metav1.ConditionTrue))
		Eventually(conditionOf(d.Name, itmv1.DeviceConditionUpToDate)).Should(Equal(metav1.ConditionTrue))
		obs := getDevice(d.Name).Status.Observed
		Expect(obs.Addresses).To(Equal([]string{"10.0.0.7", "fd00::7"}))
		Expect(*obs.DiskEncrypted).To(BeTrue())
		Expect(obs.Hostname).To(Equal("jdoe-laptop"))
		Expect(getDevice(d.Name).Status.LastCheckIn).NotTo(BeNil())

		By("writing the Device only when a fact changes")
		rv := getDevice(d.Name).ResourceVersion
		Expect(post(d.Name, token, checkin.Request{Sequence: 2, Facts: facts("10.0.0.7", "fd00::7")}).code).To(Equal(200))
		Consistently(func() string { return getDevice(d.Name).ResourceVersion }).WithTimeout(time.Second).Should(Equal(rv))

		By("dropping a fact no longer reported")
		f := facts("10.0.0.7")
		f.DiskEncrypted = nil
		Expect(post(d.Name, token, checkin.Request{Sequence: 3, Facts: f}).code).To(Equal(200))
		Eventually(func() *bool { return getDevice(d.Name).Status.Observed.DiskEncrypted }).Should(BeNil())
	})

	It("turns CheckedIn off the moment the threshold passes, and on again at the next check-in", func() {
		Expect(post(d.Name, token, checkin.Request{Sequence: 1, Facts: facts()}).code).To(Equal(200))
		Eventually(conditionOf(d.Name, itmv1.DeviceConditionCheckedIn)).Should(Equal(metav1.ConditionTrue))
		renewed := leaseOf(d.Name).Spec.RenewTime.Time

		Eventually(conditionOf(d.Name, itmv1.DeviceConditionCheckedIn)).WithTimeout(3 * staleAfter).WithPolling(50 * time.Millisecond).
			Should(Equal(metav1.ConditionFalse))
		went := time.Now()
		Expect(went.Sub(renewed)).To(BeNumerically("<", staleAfter+time.Second), "no polling: it turns at the threshold")
		Expect(went.Sub(renewed)).To(BeNumerically(">=", staleAfter-100*time.Millisecond))

		Expect(post(d.Name, token, checkin.Request{Sequence: 2, Facts: facts()}).code).To(Equal(200))
		Eventually(conditionOf(d.Name, itmv1.DeviceConditionCheckedIn)).WithTimeout(2 * time.Second).Should(Equal(metav1.ConditionTrue))
	})

	It("accepts a token only for its own device", func() {
		other := agentDevice(nil)
		otherToken := tokenOf(other.Name)
		Expect(post(other.Name, token, checkin.Request{Sequence: 1, Facts: facts()}).code).To(Equal(401))
		Expect(post(d.Name, otherToken, checkin.Request{Sequence: 1, Facts: facts()}).code).To(Equal(401))
		Expect(leaseOf(other.Name).Spec.RenewTime).To(BeNil())
		Expect(post("no-such-device", token, checkin.Request{Sequence: 1, Facts: facts()}).body["error"]).To(Equal("invalid device token"))
	})

	DescribeTable("refuses bad input with a clear error and changes nothing",
		func(contentType, tokenKind, body string, wantCode int, wantError string) {
			t := token
			switch tokenKind {
			case "none":
				t = ""
			case "wrong":
				t = strings.Repeat("A", 43)
			}
			res := postRaw(d.Name, t, contentType, []byte(body))
			Expect(res.code).To(Equal(wantCode), res.String())
			Expect(res.body["error"]).To(ContainSubstring(wantError))
			Expect(leaseOf(d.Name).Spec.RenewTime).To(BeNil())
			Expect(getDevice(d.Name).Status.Observed).To(BeNil())
		},
		Entry("no token", "application/json", "none", `{"sequence":1,"facts":{}}`, 401, "invalid device token"),
		Entry("a wrong token", "application/json", "wrong", `{"sequence":1,"facts":{}}`, 401, "invalid device token"),
		Entry("not JSON", "text/plain", "ok", `sequence=1`, 415, "Content-Type must be application/json"),
		Entry("malformed JSON", "application/json", "ok", `{"sequence":`, 400, "malformed check-in"),
		Entry("an unknown field", "application/json", "ok", `{"sequence":1,"facts":{},"lastCheckIn":"2030-01-01T00:00:00Z"}`, 400, `unknown field "lastCheckIn"`),
		Entry("two JSON objects", "application/json", "ok", `{"sequence":1,"facts":{}}{}`, 400, "data after the JSON object"),
		Entry("an oversized body", "application/json", "ok", `{"sequence":1,"facts":{"hostname":"`+strings.Repeat("h", checkin.MaxBodyBytes)+`"}}`, 413, "exceeds"),
		Entry("an address that is not an IP", "application/json", "ok", `{"sequence":1,"facts":{"addresses":["10.0.0.1","10.0.0.300"]}}`, 400, `facts.addresses[1]: "10.0.0.300" is not an IP address`),
		Entry("an overlong OS version", "application/json", "ok", `{"sequence":1,"facts":{"osVersion":"`+strings.Repeat("9", 129)+`"}}`, 400, "facts.osVersion"),
		Entry("an upgrade report with nothing authorized", "application/json", "ok", `{"sequence":1,"facts":{},"upgrade":{"state":"Succeeded","targetVersion":"24.04"}}`, 403, "no upgrade is authorized"),
	)

	It("accepts check-ins milliseconds apart, faster than its cache can follow", func() {
		for seq := uint64(1); seq <= 10; seq++ {
			res := post(d.Name, token, checkin.Request{Sequence: seq, Facts: facts()})
			Expect(res.code).To(Equal(200), "check-in %d: %s", seq, res)
		}
		Expect(leaseOf(d.Name).Annotations[checkin.AnnotationSequence]).To(Equal("10"))
	})

	It("refuses a replay of old facts", func() {
		Expect(post(d.Name, token, checkin.Request{Sequence: 5, Facts: facts("10.0.0.8")}).code).To(Equal(200))
		Eventually(func() []string {
			if o := getDevice(d.Name).Status.Observed; o != nil {
				return o.Addresses
			}
			return nil
		}).Should(Equal([]string{"10.0.0.8"}))
		res := post(d.Name, token, checkin.Request{Sequence: 4, Facts: facts("10.0.0.99")})
		Expect(res.code).To(Equal(409), res.String())
		Expect(res.body["error"]).To(ContainSubstring("sequence 4 is not newer than the last accepted 5"))
		Consistently(func() []string { return getDevice(d.Name).Status.Observed.Addresses }).WithTimeout(time.Second).Should(Equal([]string{"10.0.0.8"}))
	})

	It("lets the agent move an authorized upgrade forward only along Authorized → InProgress → Succeeded|Failed", func() {
		Expect(post(d.Name, token, checkin.Request{Sequence: 1, Facts: facts()}).code).To(Equal(200))
		// The operator (a MaintenanceWindow) authorizes the upgrade.
		dev := getDevice(d.Name)
		base := dev.DeepCopy()
		dev.Status.Upgrade = &itmv1.UpgradeStatus{State: itmv1.UpgradeStateAuthorized, TargetVersion: "26.04", Window: "ring2", Attempts: 1}
		Expect(k8s.Status().Patch(ctx, dev, client.MergeFrom(base))).To(Succeed())

		var res checkInResult
		Eventually(func() any {
			res = post(d.Name, token, checkin.Request{Sequence: uint64(time.Now().UnixNano()), Facts: facts()})
			return res.body["upgrade"]
		}).Should(HaveKeyWithValue("targetVersion", "26.04"))
		Expect(res.body["upgrade"]).To(HaveKeyWithValue("state", "Authorized"))

		report := func(state itmv1.UpgradeState, target string) checkInResult {
			return post(d.Name, token, checkin.Request{Sequence: uint64(time.Now().UnixNano()), Facts: facts(),
				Upgrade: &checkin.UpgradeReport{State: state, TargetVersion: target, Message: "step " + string(state)}})
		}
		Expect(report(itmv1.UpgradeStateSucceeded, "26.04").code).To(Equal(403), "Authorized → Succeeded skips InProgress")
		Expect(report(itmv1.UpgradeStateInProgress, "99.0").code).To(Equal(403), "a target nobody authorized")
		Expect(report(itmv1.UpgradeStateInProgress, "26.04").code).To(Equal(200))
		Eventually(func() itmv1.UpgradeState { return getDevice(d.Name).Status.Upgrade.State }).Should(Equal(itmv1.UpgradeStateInProgress))
		Expect(getDevice(d.Name).Status.Upgrade.StartedAt).NotTo(BeNil())
		Expect(report(itmv1.UpgradeStateAuthorized, "26.04").code).To(Equal(403), "no way back")
		Eventually(func() int { return report(itmv1.UpgradeStateSucceeded, "26.04").code }).Should(Equal(200))
		u := getDevice(d.Name).Status.Upgrade
		Expect(u.State).To(Equal(itmv1.UpgradeStateSucceeded))
		Expect(u.FinishedAt).NotTo(BeNil())
		Expect(u.Message).To(Equal("step Succeeded"))
		Expect(u.Attempts).To(BeEquivalentTo(1), "agents cannot change the attempt count")
	})

	It("reports an address claimed by two agents on both devices", func() {
		other := agentDevice(nil)
		otherToken := tokenOf(other.Name)
		Expect(post(d.Name, token, checkin.Request{Sequence: 1, Facts: facts("10.7.7.7")}).code).To(Equal(200))
		Expect(post(other.Name, otherToken, checkin.Request{Sequence: 1, Facts: facts("10.7.7.7")}).code).To(Equal(200))
		// Ready is False before the first check-in too, so wait for the reason.
		readyMessage := func(name string) func() string {
			return func() string {
				raw, _ := json.Marshal(getDevice(name).Status.Conditions)
				return string(raw)
			}
		}
		Eventually(readyMessage(d.Name)).Should(ContainSubstring("10.7.7.7 (also claimed by " + other.Name + ")"))
		Eventually(readyMessage(other.Name)).Should(ContainSubstring("10.7.7.7 (also claimed by " + d.Name + ")"))
		Expect(conditionOf(d.Name, itmv1.ConditionReady)()).To(Equal(metav1.ConditionFalse))
	})
})
