package wire

import (
	"encoding/json"
	"testing"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// TestTheWireFormatIsVersion1: agents already in the field speak these
// exact JSON names; renaming a field breaks them, so it must break this.
func TestTheWireFormatIsVersion1(t *testing.T) {
	yes, seq := true, uint64(41)
	for _, c := range []struct {
		name string
		v    any
		want string
	}{
		{"a full check-in", Request{
			Sequence: 42,
			Facts: Facts{OSVersion: "24.04", Hostname: "jdoe", Addresses: []string{"10.0.0.7"}, DiskEncrypted: &yes,
				AgentVersion: "v1", Attributes: map[string]string{"k": "v"}},
			Upgrade: &UpgradeReport{State: UpgradeStateFailed, TargetVersion: "24.10", Message: "disk full"},
		}, `{"sequence":42,"facts":{"osVersion":"24.04","hostname":"jdoe","addresses":["10.0.0.7"],"diskEncrypted":true,"agentVersion":"v1","attributes":{"k":"v"}},"upgrade":{"state":"Failed","targetVersion":"24.10","message":"disk full"}}`},
		{"an empty check-in", Request{}, `{"sequence":0,"facts":{}}`},
		{"an answer with an upgrade", Response{
			NextCheckInSeconds: 60, MinIntervalMilliseconds: 10000, Upgrade: &UpgradeAuthorization{State: UpgradeStateAuthorized, TargetVersion: "24.10", Window: "w"},
			Warnings: []string{"x"},
		}, `{"nextCheckInSeconds":60,"minIntervalMilliseconds":10000,"upgrade":{"state":"Authorized","targetVersion":"24.10","window":"w"},"warnings":["x"]}`},
		{"a refused sequence", Error{Error: "replay", LastSequence: &seq}, `{"error":"replay","lastSequence":41}`},
		{"another error", Error{Error: "busy"}, `{"error":"busy"}`},
	} {
		got, err := json.Marshal(c.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
	if got := Endpoint("https://checkin.example.com/", "laptop-1"); got != "https://checkin.example.com/v1/devices/laptop-1/checkin" {
		t.Errorf("endpoint: %s", got)
	}
}

// TestUpgradeStatesAreTheAPIs: the service converts between the wire's
// states and the API's by value (a Device's status.upgrade.state is what an
// agent reads and reports), so each wire value must be the API's.
func TestUpgradeStatesAreTheAPIs(t *testing.T) {
	for _, c := range []struct {
		wire UpgradeState
		api  itmv1.UpgradeState
	}{
		{UpgradeStatePending, itmv1.UpgradeStatePending},
		{UpgradeStateAuthorized, itmv1.UpgradeStateAuthorized},
		{UpgradeStateInProgress, itmv1.UpgradeStateInProgress},
		{UpgradeStateSucceeded, itmv1.UpgradeStateSucceeded},
		{UpgradeStateFailed, itmv1.UpgradeStateFailed},
	} {
		if string(c.wire) != string(c.api) {
			t.Errorf("wire %q, API %q", c.wire, c.api)
		}
	}
}
