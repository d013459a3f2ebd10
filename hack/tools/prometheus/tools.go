//go:build tools

// Package tools pins Prometheus, whose promtool checks and unit-tests the
// alert rules the chart ships (make test), and whose PromQL parser the
// dashboard test in this module uses. Neither is shipped by itmanager.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
