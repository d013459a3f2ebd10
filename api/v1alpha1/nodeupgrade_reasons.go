package v1alpha1

// Why a Node device's upgrade ended the way it did: the reasons of the
// node upgrade step (internal/nodeupgrade), one per way it finishes.
const (
	// ReasonNodeUpgraded: the Job succeeded and the node reports the target.
	ReasonNodeUpgraded = "NodeUpgraded"
	// ReasonNodeGone: the device's Node no longer exists.
	ReasonNodeGone = "NodeGone"
	// ReasonDrainTimeout: pods still remained at drain.timeout; nothing was
	// forced.
	ReasonDrainTimeout = "DrainTimeout"
	// ReasonUpgradeJobFailed: the upgrade Job failed; the node is left
	// cordoned for inspection.
	ReasonUpgradeJobFailed = "UpgradeJobFailed"
	// ReasonVersionReportRefused: the upgrade Job succeeded but its
	// termination message was not a valid version report.
	ReasonVersionReportRefused = "VersionReportRefused"
)
