//go:build tools

// Package tools pins kube-router, the NetworkPolicy engine of make cluster.
// It is a test fixture that enforces the NetworkPolicies itmanager writes on
// the real node; itmanager never ships it (its firewall is the only part that
// runs: see hack/cluster).
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
