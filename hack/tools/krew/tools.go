//go:build tools

// Package tools pins krew's manifest validator, which checks the krew
// manifest of the kubectl plugin that goreleaser writes (make krew-check).
// A build tool, never shipped.
package tools

import _ "sigs.k8s.io/krew/cmd/validate-krew-manifest"
