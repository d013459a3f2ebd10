// Package wire is the check-in protocol between the agent and the check-in
// service: the endpoint, the enrolment Secret keys and the JSON bodies. It
// imports no Kubernetes client, controller-runtime or Prometheus, so the
// agent (which links only this) stays small; internal/checkin serves it.
package wire

import "strings"

// Wire protocol, version 1.
//
//	POST /v1/devices/{name}/checkin
//	Authorization: Bearer <token from the enrolment Secret>
//	Content-Type: application/json
//
// Every error is a JSON Error with a status code: 400 malformed input (the
// message names the field), 401 unknown device or wrong token (one message
// for both), 403 an upgrade transition the token may not make, 409 a
// replayed or reordered check-in or a sequence that advanced too far (the
// body carries lastSequence), 413 a body over MaxBodyBytes, 415 not JSON,
// 429 a device checking in more often than the minimum interval, 503 the
// service busy or the API server unreachable. 429 and 503 carry
// Retry-After (seconds); an agent waits at least that long.
const (
	// PathPrefix is where the device endpoints are served.
	PathPrefix = "/v1/devices/"
	// MaxBodyBytes bounds a check-in body.
	MaxBodyBytes = 16 << 10
)

// Endpoint is the check-in URL of a device under the service's base URL.
func Endpoint(base, device string) string {
	return strings.TrimSuffix(base, "/") + PathPrefix + device + "/checkin"
}

// Enrolment Secret keys, written for the agent: url is the device's
// check-in endpoint, token its bearer token, ca.crt the CA bundle that
// verifies the service (empty: the system roots).
const (
	SecretKeyURL   = "url"
	SecretKeyToken = "token"
	SecretKeyCA    = "ca.crt"
)

// Request is one check-in.
type Request struct {
	// Sequence increases by one with every check-in of a device (the agent
	// keeps it across restarts); a check-in whose sequence is not above the
	// last accepted one is a replay and changes nothing, and one that
	// advances by more than one per minimum interval elapsed, plus one, is
	// refused.
	Sequence uint64 `json:"sequence"`
	// Facts the agent gathered. Absent facts are unknown.
	Facts Facts `json:"facts"`
	// Upgrade reports progress of an authorized upgrade.
	Upgrade *UpgradeReport `json:"upgrade,omitempty"`
}

// Facts are what an agent observed on its device.
type Facts struct {
	OSVersion     string            `json:"osVersion,omitempty"`
	Hostname      string            `json:"hostname,omitempty"`
	Addresses     []string          `json:"addresses,omitempty"`
	DiskEncrypted *bool             `json:"diskEncrypted,omitempty"`
	AgentVersion  string            `json:"agentVersion,omitempty"`
	Attributes    map[string]string `json:"attributes,omitempty"`
}

// UpgradeState is an upgrade's state on the wire. Its values are
// api/v1alpha1's UpgradeState values (a test holds them equal); wire keeps
// its own type so the agent links no API types and no apimachinery.
type UpgradeState string

// The upgrade states.
const (
	UpgradeStatePending    UpgradeState = "Pending"
	UpgradeStateAuthorized UpgradeState = "Authorized"
	UpgradeStateInProgress UpgradeState = "InProgress"
	UpgradeStateSucceeded  UpgradeState = "Succeeded"
	UpgradeStateFailed     UpgradeState = "Failed"
)

// UpgradeReport moves an authorized upgrade along
// Authorized → InProgress → Succeeded|Failed.
type UpgradeReport struct {
	State         UpgradeState `json:"state"`
	TargetVersion string       `json:"targetVersion"`
	Message       string       `json:"message,omitempty"`
}

// Response answers a check-in.
type Response struct {
	// NextCheckInSeconds is when the server wants to hear from the agent again.
	NextCheckInSeconds int `json:"nextCheckInSeconds"`
	// MinIntervalMilliseconds is the service's minimum interval between two
	// check-ins of a device (--checkin-min-interval): one sooner after this
	// answer is refused 429. An agent that checks in early on a fact change
	// waits at least this long after an answer. Absent (0) from services
	// older than the field: the agent then assumes a conservative floor.
	MinIntervalMilliseconds int64 `json:"minIntervalMilliseconds,omitempty"`
	// Upgrade is present while an upgrade is authorized or in progress.
	Upgrade *UpgradeAuthorization `json:"upgrade,omitempty"`
	// Warnings about facts that were not recorded.
	Warnings []string `json:"warnings,omitempty"`
}

// UpgradeAuthorization tells the agent what to upgrade to.
type UpgradeAuthorization struct {
	State         UpgradeState `json:"state"`
	TargetVersion string       `json:"targetVersion"`
	Window        string       `json:"window,omitempty"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
	// LastSequence is the last accepted sequence, on a 409 that refused
	// the sequence (a replay, or one that advanced too far): the agent
	// continues from it (after losing its state file, or when someone else
	// used its token). Only a caller holding the device's token sees it.
	LastSequence *uint64 `json:"lastSequence,omitempty"`
}
