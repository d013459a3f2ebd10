package rollout

import (
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// VersionReportPrefix starts the termination message with which a node
// upgrade Job reports the version it installed:
// "itmanager.io/os-version=<version>".
const VersionReportPrefix = itmv1.LabelOSVersion + "="

// maxReportLength bounds what is looked at; the kubelet caps termination
// messages at 4096 bytes anyway.
const maxReportLength = 4096

// ErrNoReport says the Job reported no version: the node's own report
// decides.
var ErrNoReport = errors.New("no version report")

// ParseVersionReport reads the version an upgrade Job reported in its
// termination message. The message is written by the upgrade image, so it
// is untrusted: it must be exactly one line "itmanager.io/os-version=<v>"
// (surrounding white space aside) where <v> is a valid label value, as it
// becomes the Node's label. An empty message is ErrNoReport; anything else
// is refused with an error that says why without repeating the message.
func ParseVersionReport(message string) (string, error) {
	if len(message) > maxReportLength {
		return "", fmt.Errorf("the termination message is %d bytes, not a version report", len(message))
	}
	m := strings.TrimSpace(message)
	if m == "" {
		return "", ErrNoReport
	}
	if strings.ContainsAny(m, "\r\n") {
		return "", errors.New("the termination message has more than one line; a version report is the single line " + VersionReportPrefix + "<version>")
	}
	v, ok := strings.CutPrefix(m, VersionReportPrefix)
	if !ok {
		return "", errors.New("the termination message is not of the form " + VersionReportPrefix + "<version>")
	}
	if v == "" {
		return "", errors.New("the termination message reports an empty version")
	}
	if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
		return "", errors.New("the reported version is not a valid label value: " + strings.Join(errs, "; "))
	}
	return v, nil
}
