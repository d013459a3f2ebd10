package rollout

import (
	"errors"
	"strings"
	"testing"
)

func TestParseVersionReport(t *testing.T) {
	tests := map[string]struct {
		message string
		want    string
		wantErr string // substring; "none" for ErrNoReport
	}{
		"a plain version":                {message: "itmanager.io/os-version=24.04.1", want: "24.04.1"},
		"a trailing newline, as echo":    {message: "itmanager.io/os-version=6.1.0-rc1_x86\n", want: "6.1.0-rc1_x86"},
		"the longest label value":        {message: "itmanager.io/os-version=" + strings.Repeat("a", 63), want: strings.Repeat("a", 63)},
		"empty: no report":               {message: "", wantErr: "none"},
		"white space only: no report":    {message: " \n\t", wantErr: "none"},
		"another prefix":                 {message: "os-version=24.04", wantErr: "not of the form"},
		"prefix in another case":         {message: "ITMANAGER.IO/OS-VERSION=24.04", wantErr: "not of the form"},
		"log text":                       {message: "upgrading...\nitmanager.io/os-version=24.04", wantErr: "more than one line"},
		"two reports":                    {message: "itmanager.io/os-version=1\nitmanager.io/os-version=2", wantErr: "more than one line"},
		"empty version":                  {message: "itmanager.io/os-version=", wantErr: "empty version"},
		"a space in the version":         {message: "itmanager.io/os-version=24.04 LTS", wantErr: "not a valid label value"},
		"a slash in the version":         {message: "itmanager.io/os-version=../../etc", wantErr: "not a valid label value"},
		"an equals sign in the version":  {message: "itmanager.io/os-version=a=b", wantErr: "not a valid label value"},
		"64 characters":                  {message: "itmanager.io/os-version=" + strings.Repeat("a", 64), wantErr: "not a valid label value"},
		"ends with a dash":               {message: "itmanager.io/os-version=24.04-", wantErr: "not a valid label value"},
		"a carriage return in the value": {message: "itmanager.io/os-version=1\r2", wantErr: "more than one line"},
		"far too long":                   {message: strings.Repeat("x", 5000), wantErr: "5000 bytes"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseVersionReport(tc.message)
			switch {
			case tc.wantErr == "none":
				if !errors.Is(err, ErrNoReport) {
					t.Fatalf("got %q, %v; want ErrNoReport", got, err)
				}
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %q, %v; want an error containing %q", got, err, tc.wantErr)
				}
				if got != "" {
					t.Fatalf("refused report returned version %q", got)
				}
			default:
				if err != nil || got != tc.want {
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
			}
		})
	}
}
