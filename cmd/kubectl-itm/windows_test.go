package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func TestWindowsAndSchedule(t *testing.T) {
	berlin := &itmv1.MaintenanceWindow{
		ObjectMeta: metav1.ObjectMeta{Name: "ring1"},
		Spec: itmv1.MaintenanceWindowSpec{
			TimeZone: "Europe/Berlin",
			Windows:  []itmv1.Window{{Schedule: "30 2 * * SUN", Duration: metav1.Duration{Duration: 2 * time.Hour}}},
			Blackouts: []itmv1.Blackout{{Start: &metav1.Time{Time: time.Date(2026, 4, 5, 0, 0, 0, 0, time.UTC)},
				End: &metav1.Time{Time: time.Date(2026, 4, 6, 0, 0, 0, 0, time.UTC)}}},
		},
		Status: itmv1.MaintenanceWindowStatus{Devices: itmv1.UpgradeCounts{Succeeded: 3, Pending: 2}},
	}
	c := fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(berlin).Build()
	now := time.Date(2026, 3, 25, 12, 0, 0, 0, time.UTC)
	la, _ := time.LoadLocation("America/Los_Angeles")

	var out bytes.Buffer
	if err := windows(context.Background(), c, now, la, &out); err != nil {
		t.Fatal(err)
	}
	// 29 March 02:30 does not exist in Berlin: the window opens at 03:00 CEST.
	for _, want := range []string{"ring1", "Europe/Berlin", "2026-03-29 03:00 CEST", "2026-03-28 18:00 PDT", "2026-03-29 01:00 UTC", "3 done, 0 running, 0 failed, 2 pending"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("windows lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	if err := scheduleOf(context.Background(), c, "ring1", 3, now, la, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 6 { // title, blank, header, 3 openings
		t.Fatalf("schedule printed %d lines:\n%s", len(lines), out.String())
	}
	for i, want := range []string{"2026-03-29 03:00 CEST", "2026-04-05 02:30 CEST", "2026-04-12 02:30 CEST"} {
		if !strings.Contains(lines[3+i], want) {
			t.Errorf("opening %d: %q lacks %q", i+1, lines[3+i], want)
		}
	}
	// kubectl's table spacing: three spaces between columns.
	if !strings.Contains(lines[3], "2026-03-29 05:00 CEST   2h0m0s   ") {
		t.Errorf("the opening moved to 03:00 CEST still lasts 2h of elapsed time: %q", lines[3])
	}
	if !strings.Contains(lines[4], "starts in a blackout") {
		t.Errorf("the 5 April opening is in a blackout: %q", lines[4])
	}
}
