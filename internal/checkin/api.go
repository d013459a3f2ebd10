// Package checkin is the agent check-in service: devices authenticate with a
// per-device token (never Kubernetes credentials), renew their Lease with the
// server's clock, report facts, and learn of upgrades the operator authorized.
package checkin

import "github.com/itmanager-io/itmanager/internal/checkin/wire"

// The protocol lives in package wire (the agent links only that); these
// names keep the service's code and its callers reading as before.
const (
	PathPrefix     = wire.PathPrefix
	MaxBodyBytes   = wire.MaxBodyBytes
	SecretKeyURL   = wire.SecretKeyURL
	SecretKeyToken = wire.SecretKeyToken
	SecretKeyCA    = wire.SecretKeyCA
)

type (
	Request              = wire.Request
	Facts                = wire.Facts
	UpgradeReport        = wire.UpgradeReport
	Response             = wire.Response
	UpgradeAuthorization = wire.UpgradeAuthorization
	Error                = wire.Error
)

// Endpoint is the check-in URL of a device under the service's base URL.
func Endpoint(base, device string) string { return wire.Endpoint(base, device) }
