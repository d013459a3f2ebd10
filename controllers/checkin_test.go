package controllers_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/checkin/wire"
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
		// A new Lease: its sequence starts again.
		Expect(post(d.Name, newToken, checkin.Request{Sequence: 1, Facts: facts()}).code).To(Equal(200))
	})

	It("leaves a Secret it did not create alone (Stalled), enrols by itself once that Secret is deleted, and is Stalled again when someone takes its own over", func() {
		name := uniqueName("lt")
		foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testenv.DevicesNamespace, Name: name + "-agent"},
			StringData: map[string]string{"token": "someone else's"}}
		Expect(k8s.Create(ctx, foreign)).To(Succeed())
		agentDevice(func(d *itmv1.Device) { d.Name = name })
		stalledReason := func() string {
			d := &itmv1.Device{}
			Expect(k8s.Get(ctx, types.NamespacedName{Name: name}, d)).To(Succeed())
			if c := meta.FindStatusCondition(d.Status.Conditions, itmv1.ConditionStalled); c != nil && c.Status == metav1.ConditionTrue {
				return c.Reason
			}
			return ""
		}
		Eventually(stalledReason).Should(Equal(itmv1.ReasonEnrolmentConflict), "Stalled while the foreign Secret is there")
		Consistently(func() string {
			s := &corev1.Secret{}
			Expect(k8s.Get(ctx, types.NamespacedName{Namespace: testenv.DevicesNamespace, Name: name + "-agent"}, s)).To(Succeed())
			return string(s.Data["token"])
		}).WithTimeout(2*time.Second).Should(Equal("someone else's"), "the foreign Secret is never changed")

		By("deleting the foreign Secret, with no change to the Device")
		Expect(k8s.Delete(ctx, foreign)).To(Succeed())
		token := tokenOf(name)
		Expect(token).To(HaveLen(43))
		Expect(post(name, token, checkin.Request{Sequence: 1, Facts: facts()}).code).To(Equal(200))
		Eventually(stalledReason).Should(BeEmpty(), "no longer Stalled")

		By("someone taking itmanager's Secret over after enrolment (its managed-by label removed): Stalled again, not Ready")
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			s := &corev1.Secret{}
			if err := k8s.Get(ctx, types.NamespacedName{Namespace: testenv.DevicesNamespace, Name: name + "-agent"}, s); err != nil {
				return err
			}
			delete(s.Labels, itmv1.LabelManagedBy)
			return k8s.Update(ctx, s)
		})).To(Succeed())
		Eventually(stalledReason).Should(Equal(itmv1.ReasonEnrolmentConflict))
		d := &itmv1.Device{}
		Expect(k8s.Get(ctx, types.NamespacedName{Name: name}, d)).To(Succeed())
		Expect(meta.IsStatusConditionTrue(d.Status.Conditions, itmv1.ConditionReady)).To(BeFalse())
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
		Expect(res.body["minIntervalMilliseconds"]).To(BeEquivalentTo(checkinMinInterval.Milliseconds()), "the agent learns the minimum it must keep")
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

	It("refuses a replay of old facts", func() {
		Expect(post(d.Name, token, checkin.Request{Sequence: 1, Facts: facts("10.0.0.9")}).code).To(Equal(200))
		Expect(post(d.Name, token, checkin.Request{Sequence: 2, Facts: facts("10.0.0.8")}).code).To(Equal(200))
		Eventually(func() []string {
			if o := getDevice(d.Name).Status.Observed; o != nil {
				return o.Addresses
			}
			return nil
		}).Should(Equal([]string{"10.0.0.8"}))
		res := post(d.Name, token, checkin.Request{Sequence: 1, Facts: facts("10.0.0.99")})
		Expect(res.code).To(Equal(409), res.String())
		Expect(res.body["error"]).To(ContainSubstring("sequence 1 is not newer than the last accepted 2"))
		Expect(res.body["lastSequence"]).To(BeEquivalentTo(2))
		Consistently(func() []string { return getDevice(d.Name).Status.Observed.Addresses }).WithTimeout(time.Second).Should(Equal([]string{"10.0.0.8"}))
	})

	It("lets the agent move an authorized upgrade forward only along Authorized → InProgress → Succeeded|Failed", func() {
		seq := uint64(1)
		next := func() uint64 { seq++; return seq }
		Expect(post(d.Name, token, checkin.Request{Sequence: 1, Facts: facts()}).code).To(Equal(200))
		// The operator (a MaintenanceWindow) authorizes the upgrade.
		dev := getDevice(d.Name)
		base := dev.DeepCopy()
		dev.Status.Upgrade = &itmv1.UpgradeStatus{State: itmv1.UpgradeStateAuthorized, TargetVersion: "26.04", Window: "ring2", Attempts: 1}
		Expect(k8s.Status().Patch(ctx, dev, client.MergeFrom(base))).To(Succeed())

		var res checkInResult
		Eventually(func() any {
			res = post(d.Name, token, checkin.Request{Sequence: next(), Facts: facts()})
			return res.body["upgrade"]
		}).Should(HaveKeyWithValue("targetVersion", "26.04"))
		Expect(res.body["upgrade"]).To(HaveKeyWithValue("state", "Authorized"))

		report := func(state wire.UpgradeState, target string) checkInResult {
			return post(d.Name, token, checkin.Request{Sequence: next(), Facts: facts(),
				Upgrade: &checkin.UpgradeReport{State: state, TargetVersion: target, Message: "step " + string(state)}})
		}
		Expect(report(wire.UpgradeStateSucceeded, "26.04").code).To(Equal(403), "Authorized → Succeeded skips InProgress")
		Expect(report(wire.UpgradeStateInProgress, "99.0").code).To(Equal(403), "a target nobody authorized")
		Expect(report(wire.UpgradeStateInProgress, "26.04").code).To(Equal(200))
		Eventually(func() itmv1.UpgradeState { return getDevice(d.Name).Status.Upgrade.State }).Should(Equal(itmv1.UpgradeStateInProgress))
		Expect(getDevice(d.Name).Status.Upgrade.StartedAt).NotTo(BeNil())
		Expect(report(wire.UpgradeStateAuthorized, "26.04").code).To(Equal(403), "no way back")
		Eventually(func() int { return report(wire.UpgradeStateSucceeded, "26.04").code }).Should(Equal(200))
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
		// Ready is True before the first check-in (enrolled), so wait for the reason.
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

var (
	pacedMu sync.Mutex
	paced   = map[string]time.Time{}
)

// paceCheckIn waits until the previous check-in of the device through post
// is at least the check-in service's minimum interval ago, as an agent
// checking in every interval would be. The returned func is called once the
// answer came back: the service judges the interval from the Lease renewal
// it made while answering, which on a loaded machine is well after the
// request was sent.
func paceCheckIn(name string) (answered func()) {
	pacedMu.Lock()
	last := paced[name]
	pacedMu.Unlock()
	if wait := time.Until(last.Add(checkinMinInterval + 50*time.Millisecond)); wait > 0 {
		time.Sleep(wait)
	}
	return func() {
		pacedMu.Lock()
		paced[name] = time.Now()
		pacedMu.Unlock()
	}
}

// postTo checks in at the check-in service replica base, without pacing,
// and returns the answer with its headers.
func postTo(base, name, token string, req checkin.Request) (checkInResult, http.Header) {
	GinkgoHelper()
	body, err := json.Marshal(req)
	Expect(err).NotTo(HaveOccurred())
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, checkin.Endpoint(base, name), bytes.NewReader(body))
	Expect(err).NotTo(HaveOccurred())
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpClient.Do(hreq)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	out := checkInResult{code: resp.StatusCode}
	Expect(json.Unmarshal(data, &out.body)).To(Succeed(), string(data))
	return out, resp.Header
}

var _ = Describe("Check-in service limits", func() {
	It("renews the Lease on a check-in with empty facts", func() {
		d := agentDevice(nil)
		token := tokenOf(d.Name)
		before := time.Now()
		res := post(d.Name, token, checkin.Request{Sequence: 1})
		Expect(res.code).To(Equal(200), res.String())
		lease := leaseOf(d.Name)
		Expect(lease.Spec.RenewTime).NotTo(BeNil())
		Expect(lease.Spec.RenewTime.Time).To(BeTemporally(">=", before.Add(-time.Second)))
		Expect(lease.Annotations[checkin.AnnotationSequence]).To(Equal("1"))
		Eventually(conditionOf(d.Name, itmv1.DeviceConditionCheckedIn)).Should(Equal(metav1.ConditionTrue))

		By("dropping facts reported earlier when a later check-in reports none")
		Expect(post(d.Name, token, checkin.Request{Sequence: 2, Facts: facts("10.0.0.5")}).code).To(Equal(200))
		Eventually(func() *itmv1.ObservedFacts { return getDevice(d.Name).Status.Observed }).ShouldNot(BeNil())
		res = post(d.Name, token, checkin.Request{Sequence: 3, Facts: checkin.Facts{}})
		Expect(res.code).To(Equal(200), res.String())
		Eventually(func() []string {
			if o := getDevice(d.Name).Status.Observed; o != nil {
				return o.Addresses
			}
			return nil
		}).Should(BeEmpty())
		Expect(leaseOf(d.Name).Annotations[checkin.AnnotationSequence]).To(Equal("3"))
	})

	It("refuses a sequence that advances more than one per interval, plus one, and still takes the next one in step", func() {
		d := agentDevice(nil)
		token := tokenOf(d.Name)
		Expect(post(d.Name, token, checkin.Request{Sequence: 1, Facts: facts()}).code).To(Equal(200))
		renewed := leaseOf(d.Name).ResourceVersion

		res := post(d.Name, token, checkin.Request{Sequence: math.MaxUint64, Facts: facts("10.0.0.66")})
		Expect(res.code).To(Equal(409), res.String())
		Expect(res.body["error"]).To(ContainSubstring("sequence 18446744073709551615 advances too far: the last accepted is 1"))
		Expect(res.body["lastSequence"]).To(BeEquivalentTo(1))
		Expect(leaseOf(d.Name).ResourceVersion).To(Equal(renewed), "a refused sequence writes nothing")
		Expect(leaseOf(d.Name).Annotations[checkin.AnnotationSequence]).To(Equal("1"))

		By("accepting the next sequence, as the real agent sends it")
		Expect(post(d.Name, token, checkin.Request{Sequence: 2, Facts: facts()}).code).To(Equal(200))
		Expect(leaseOf(d.Name).Annotations[checkin.AnnotationSequence]).To(Equal("2"))
	})

	Describe("with the default minimum interval of 10s, on two replicas", Ordered, func() {
		var replicas []string
		BeforeAll(func() {
			ports, err := testenv.FreePorts(2)
			Expect(err).NotTo(HaveOccurred())
			for i, port := range ports {
				addr := fmt.Sprintf("127.0.0.1:%d", port)
				startCheckin(addr, fmt.Sprintf("checkin-default-%d", i), checkin.DefaultMinInterval, 16)
				replicas = append(replicas, "https://"+addr)
			}
			for _, u := range replicas {
				Eventually(func() error {
					resp, err := httpClient.Get(u + "/healthz")
					if err != nil {
						return err
					}
					return resp.Body.Close()
				}).WithTimeout(30 * time.Second).Should(Succeed())
			}
		})

		It("answers a flood from one token 429 with Retry-After on every replica without writing, while another device checks in", func() {
			d := agentDevice(nil)
			token := tokenOf(d.Name)
			other := agentDevice(nil)
			otherToken := tokenOf(other.Name)
			res, _ := postTo(replicas[0], d.Name, token, checkin.Request{Sequence: 1, Facts: facts()})
			Expect(res.code).To(Equal(200), res.String())
			leaseRV := leaseOf(d.Name).ResourceVersion
			started := time.Now()

			var wg sync.WaitGroup
			var mu sync.Mutex
			codes := map[int]int{}
			var retryAfter []string
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer GinkgoRecover()
					defer wg.Done()
					for i := range 10 {
						res, h := postTo(replicas[(w+i)%2], d.Name, token, checkin.Request{Sequence: uint64(2 + i), Facts: facts("10.0.0.77")})
						mu.Lock()
						codes[res.code]++
						retryAfter = append(retryAfter, h.Get("Retry-After"))
						mu.Unlock()
					}
				}()
			}
			// Meanwhile another device is answered as usual.
			otherRes, _ := postTo(replicas[1], other.Name, otherToken, checkin.Request{Sequence: 1, Facts: facts()})
			wg.Wait()
			Expect(time.Since(started)).To(BeNumerically("<", checkin.DefaultMinInterval), "the flood ran within one interval")

			Expect(otherRes.code).To(Equal(200), otherRes.String())
			Expect(codes).To(Equal(map[int]int{429: 80}))
			for _, ra := range retryAfter {
				n, err := strconv.Atoi(ra)
				Expect(err).NotTo(HaveOccurred(), "Retry-After %q", ra)
				Expect(n).To(BeNumerically(">=", 1))
				Expect(n).To(BeNumerically("<=", 10))
			}
			lease := leaseOf(d.Name)
			Expect(lease.ResourceVersion).To(Equal(leaseRV), "429s write no Lease")
			Expect(lease.Annotations[checkin.AnnotationSequence]).To(Equal("1"))
			Expect(getDevice(d.Name).Status.Observed.Addresses).To(BeEmpty(), "429s record no facts")
		})
	})
})

var _ = Describe("The check-in service's ServiceAccount", func() {
	user := "system:serviceaccount:" + testenv.OperatorNamespace + ":" + testenv.CheckinServiceAccount
	DescribeTable("may do exactly what checking in needs",
		func(verb, group, resource, subresource, namespace string, allowed bool) {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   user,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + testenv.OperatorNamespace, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Verb: verb, Group: group, Resource: resource, Subresource: subresource, Namespace: namespace,
				},
			}}
			Expect(k8s.Create(ctx, sar)).To(Succeed())
			Expect(sar.Status.Allowed).To(Equal(allowed), "%s %s/%s in %q: %+v", verb, resource, subresource, namespace, sar.Status)
		},
		Entry("get leases in the devices namespace", "get", "coordination.k8s.io", "leases", "", testenv.DevicesNamespace, true),
		Entry("update leases in the devices namespace", "update", "coordination.k8s.io", "leases", "", testenv.DevicesNamespace, true),
		Entry("get devices", "get", "itmanager.io", "devices", "", "", true),
		Entry("patch devices/status", "patch", "itmanager.io", "devices", "status", "", true),

		Entry("list leases in the devices namespace", "list", "coordination.k8s.io", "leases", "", testenv.DevicesNamespace, false),
		Entry("watch leases in the devices namespace", "watch", "coordination.k8s.io", "leases", "", testenv.DevicesNamespace, false),
		Entry("create leases in the devices namespace", "create", "coordination.k8s.io", "leases", "", testenv.DevicesNamespace, false),
		Entry("delete leases in the devices namespace", "delete", "coordination.k8s.io", "leases", "", testenv.DevicesNamespace, false),
		Entry("patch leases in the devices namespace", "patch", "coordination.k8s.io", "leases", "", testenv.DevicesNamespace, false),
		Entry("get leases in the operator namespace (leader election)", "get", "coordination.k8s.io", "leases", "", testenv.OperatorNamespace, false),
		Entry("update leases in the operator namespace", "update", "coordination.k8s.io", "leases", "", testenv.OperatorNamespace, false),
		Entry("update node leases", "update", "coordination.k8s.io", "leases", "", "kube-node-lease", false),
		Entry("update leases in default", "update", "coordination.k8s.io", "leases", "", "default", false),
		Entry("get secrets in the devices namespace (enrolment tokens)", "get", "", "secrets", "", testenv.DevicesNamespace, false),
		Entry("list secrets in the devices namespace", "list", "", "secrets", "", testenv.DevicesNamespace, false),
		Entry("get secrets in the operator namespace (the CA key)", "get", "", "secrets", "", testenv.OperatorNamespace, false),
		Entry("list secrets in the operator namespace", "list", "", "secrets", "", testenv.OperatorNamespace, false),
		Entry("list secrets cluster-wide", "list", "", "secrets", "", "", false),
		Entry("get secrets in default", "get", "", "secrets", "", "default", false),
		Entry("list devices", "list", "itmanager.io", "devices", "", "", false),
		Entry("watch devices", "watch", "itmanager.io", "devices", "", "", false),
		Entry("update devices", "update", "itmanager.io", "devices", "", "", false),
		Entry("patch devices", "patch", "itmanager.io", "devices", "", "", false),
		Entry("create devices", "create", "itmanager.io", "devices", "", "", false),
		Entry("delete devices", "delete", "itmanager.io", "devices", "", "", false),
		Entry("update devices/status", "update", "itmanager.io", "devices", "status", "", false),
		Entry("get accesspolicies", "get", "itmanager.io", "accesspolicies", "", "", false),
		Entry("patch onboardingrequests/status", "patch", "itmanager.io", "onboardingrequests", "status", "", false),
		Entry("create serviceaccounts/token in the operator namespace", "create", "", "serviceaccounts", "token", testenv.OperatorNamespace, false),
		Entry("create serviceaccounts/token in the devices namespace", "create", "", "serviceaccounts", "token", testenv.DevicesNamespace, false),
		Entry("create serviceaccounts", "create", "", "serviceaccounts", "", testenv.DevicesNamespace, false),
		Entry("create pods", "create", "", "pods", "", testenv.DevicesNamespace, false),
		Entry("get configmaps in the operator namespace", "get", "", "configmaps", "", testenv.OperatorNamespace, false),
		Entry("create networkpolicies", "create", "networking.k8s.io", "networkpolicies", "", "default", false),
		Entry("create rolebindings", "create", "rbac.authorization.k8s.io", "rolebindings", "", testenv.DevicesNamespace, false),
		Entry("impersonate users", "impersonate", "", "users", "", "", false),
		Entry("patch nodes", "patch", "", "nodes", "", "", false),
	)

	It("is the identity the check-in service runs as, and it holds no more", func() {
		// The replicas in this suite authenticate with checkinCfg: it is the
		// check-in ServiceAccount and cannot read an enrolment Secret.
		cl, err := client.New(checkinCfg, client.Options{Scheme: testenv.Scheme})
		Expect(err).NotTo(HaveOccurred())
		review := &authenticationv1.SelfSubjectReview{}
		Expect(cl.Create(ctx, review)).To(Succeed())
		Expect(review.Status.UserInfo.Username).To(Equal(user))
		d := agentDevice(nil)
		tokenOf(d.Name)
		err = cl.Get(ctx, types.NamespacedName{Namespace: testenv.DevicesNamespace, Name: d.Name + "-agent"}, &corev1.Secret{})
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		Expect(cl.Get(ctx, types.NamespacedName{Namespace: testenv.DevicesNamespace, Name: d.Name}, &coordinationv1.Lease{})).To(Succeed())
	})
})
