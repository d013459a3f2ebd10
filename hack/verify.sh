#!/usr/bin/env bash
# Fails when a generated file (CRDs, RBAC, webhook configuration, deepcopy,
# the chart's copies) differs from what the generators produce from the
# sources on disk. Works on a dirty tree: it compares before and after
# regenerating, not against git.
set -euo pipefail
cd "$(dirname "$0")/.."

generated() {
  find config/crd/bases config/rbac/role.yaml config/webhook/manifests.yaml config/admission/accesspolicy.yaml \
    charts/itmanager/templates/crds charts/itmanager/templates/manager-rbac.yaml charts/itmanager/templates/admission-policies.yaml \
    charts/itmanager/files -type f 2>/dev/null
  find config/argocd -name health.lua 2>/dev/null
  find . -name 'zz_generated*.go' -not -path './bin/*' 2>/dev/null
}
snapshot() { generated | sort | xargs sha256sum; }

before=$(snapshot)
make -s manifests generate >/dev/null
after=$(snapshot)

if [[ "$before" != "$after" ]]; then
  echo "Generated files were stale; 'make manifests generate' changed:" >&2
  diff <(echo "$before") <(echo "$after") | grep '^[<>]' | awk '{print "  " $3}' | sort -u >&2
  echo "Review and commit them." >&2
  exit 1
fi
echo "Generated files are fresh."
