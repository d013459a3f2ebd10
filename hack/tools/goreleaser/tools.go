//go:build tools

// Package tools pins goreleaser, which builds the release artifacts from
// .goreleaser.yaml (make release-snapshot; goreleaser check in CI). A build
// tool, never shipped.
package tools

import _ "github.com/goreleaser/goreleaser/v2"
