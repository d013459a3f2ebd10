//go:build tools

// Package tools pins nfpm, which builds the agent's .deb and .rpm from
// packaging/nfpm.yaml (make packages). A build tool, never shipped.
package tools

import _ "github.com/goreleaser/nfpm/v2/cmd/nfpm"
