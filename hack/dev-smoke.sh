#!/usr/bin/env bash
# make dev as a newcomer runs it, unattended (CI runs this on every
# submission): start `make dev` with no terminal and no standard input, wait
# for .dev/kubeconfig, run the README tour's commands, send Ctrl-C (SIGINT
# to its process group, as a terminal does), then check that every process
# it started is gone and that it changed nothing outside bin/ and .dev/.
#
#   hack/dev-smoke.sh            (DEV_SMOKE_TIMEOUT: seconds to wait for the
#                                 kubeconfig, default 1500, enough for a cold
#                                 control-plane build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

timeout_s=${DEV_SMOKE_TIMEOUT:-1500}
work=$(mktemp -d)
log="$work/make-dev.log"
pass=0 fail=0

say() { echo "dev-smoke: $*"; }
ok() { pass=$((pass + 1)); say "ok   $*"; }
bad() { fail=$((fail + 1)); say "FAIL $*"; }

# What the checkout looks like before: tracked changes and every untracked or
# ignored path outside bin/ and .dev/.
outside() {
  git status --porcelain --ignored --untracked-files=all |
    grep -v -E '^(!!|\?\?) (bin|\.dev)/' || true
}
before=$(outside)

if [[ -e .dev/kubeconfig ]]; then
  say ".dev/kubeconfig exists: is make dev already running here?" >&2
  exit 1
fi

say "starting make dev (no terminal, no stdin; log: $log)"
start=$(date +%s)
setsid make dev </dev/null >"$log" 2>&1 &
dev_pid=$!
pgid=$dev_pid # setsid: make leads its own session and process group

cleanup() {
  if kill -0 "$dev_pid" 2>/dev/null; then
    kill -TERM -- "-$pgid" 2>/dev/null || true
    sleep 5
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

while [[ ! -s .dev/kubeconfig ]]; do
  if ! kill -0 "$dev_pid" 2>/dev/null; then
    say "make dev exited before writing .dev/kubeconfig:" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  if (($(date +%s) - start > timeout_s)); then
    say "no .dev/kubeconfig after ${timeout_s}s:" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  sleep 1
done
up=$(($(date +%s) - start))
say "make dev is up after ${up}s"
grep -q "itmanager is running" "$log" && ok "make dev printed 'itmanager is running'" || bad "no 'itmanager is running' in the log"

export KUBECONFIG="$root/.dev/kubeconfig"
export PATH="$root/bin:$PATH"
k() { "$root/bin/kubectl" "$@"; }

# expect NAME PATTERN CMD...: CMD succeeds and prints PATTERN (an ERE).
expect() {
  local name=$1 pattern=$2
  shift 2
  local out
  if out=$("$@" 2>&1) && grep -qE -- "$pattern" <<<"$out"; then ok "$name"; else
    bad "$name: wanted /$pattern/, got:"
    sed 's/^/    /' <<<"$out" | head -20
  fi
}
# refused NAME PATTERN CMD...: CMD fails and its message matches PATTERN.
refused() {
  local name=$1 pattern=$2
  shift 2
  local out
  if out=$("$@" 2>&1); then
    bad "$name: was accepted:"
    sed 's/^/    /' <<<"$out" | head -20
  elif grep -qE -- "$pattern" <<<"$out"; then ok "$name"; else
    bad "$name: refused, but not with /$pattern/:"
    sed 's/^/    /' <<<"$out" | head -20
  fi
}
# eventually NAME PATTERN CMD...: like expect, retried for up to 60 s.
eventually() {
  local name=$1 pattern=$2 out=""
  shift 2
  for _ in $(seq 60); do
    if out=$("$@" 2>&1) && grep -qE -- "$pattern" <<<"$out"; then ok "$name"; return; fi
    sleep 1
  done
  bad "$name: wanted /$pattern/ within 60s, got:"
  sed 's/^/    /' <<<"$out" | head -20
}

# The README tour.
expect "get itmanager lists the samples" "onboardingrequest.itmanager.io/amara.okafor" k get itmanager
eventually "the Node is discovered as a Device" "node-worker-1" k get devices -o wide
expect "explain documents the API" "maxCheckInAge" k explain accesspolicy.spec.posture
refused "CEL refuses a bad address, naming the field" 'spec.addresses\[0\]' \
  k apply -f - <<'EOF'
apiVersion: itmanager.io/v1alpha1
kind: Device
metadata: {name: lt-broken}
spec: {class: Laptop, addresses: ["10.0.0.300"]}
EOF
refused "the webhook refuses an unknown time zone" 'unknown IANA time zone "Europe/Atlantis"' \
  k patch mw ring1-weekly-berlin --type=merge -p '{"spec":{"timeZone":"Europe/Atlantis"}}'
expect "the manager's own rights are listed" "devices.itmanager.io" \
  k auth can-i --list --as=system:serviceaccount:itmanager-system:itmanager-controller-manager
expect "defaults come from the API server" "^true$" k get onb amara.okafor -o 'jsonpath={.spec.approvalRequired}'
eventually "the laptop's agent is enrolled" "lt-pf3x8k2q-agent" k get secret -n itmanager-devices
# The tour's agent, against the check-in service (its own process and
# ServiceAccount): it checks in, and the Device turns CheckedIn.
mkdir -p "$work/agent"
for key in url token ca.crt; do
  k get secret lt-pf3x8k2q-agent -n itmanager-devices -o go-template="{{index .data \"$key\" | base64decode}}" >"$work/agent/$key"
done
expect "the agent checks in with the check-in service" "Checked in" \
  go run ./cmd/itmanager-agent --once --enrolment-dir "$work/agent" --state-file "$work/agent/seq"
eventually "the laptop is CheckedIn" "^True$" \
  k get dev lt-pf3x8k2q -o 'jsonpath={.status.conditions[?(@.type=="CheckedIn")].status}'
expect "the check-in service holds only its own rights" "leases.coordination.k8s.io +\[\] +\[\] +\[get update\]" \
  k auth can-i --list -n itmanager-devices --as=system:serviceaccount:itmanager-system:itmanager-checkin
refused "the check-in service may not read enrolment Secrets" "no" \
  k auth can-i get secrets -n itmanager-devices --as=system:serviceaccount:itmanager-system:itmanager-checkin
expect "ap lists the sample policy" "engineering-observability" k get ap
k create namespace grafana >/dev/null
eventually "an isolating NetworkPolicy appears in the destination" "itm-engineering-observability" \
  k get networkpolicy -n grafana
expect "kubectl itm why explains a verdict" "FAIL|PASS" kubectl-itm why lt-pf3x8k2q engineering-observability
expect "kubectl itm windows" "ring1-weekly-berlin" kubectl-itm windows
expect "kubectl itm schedule" "Europe/Berlin|CET|CEST" kubectl-itm schedule ring1-weekly-berlin

# Approval: the requester (admin) may not approve; an approver may.
refused "the requester may not approve their own request" 'may not approve or deny' \
  kubectl-itm approve amara.okafor "contract signed"
k create clusterrole onboarding-approver --verb=approve --resource=onboardingrequests.itmanager.io >/dev/null
k patch clusterrole onboarding-approver --type=json \
  -p='[{"op":"add","path":"/rules/-","value":{"apiGroups":["itmanager.io"],"resources":["onboardingrequests","onboardingrequests/status"],"verbs":["get","update","patch"]}}]' >/dev/null
k create clusterrolebinding it-lead-approves --clusterrole=onboarding-approver --user=it-lead >/dev/null
expect "an approver approves" "approved" kubectl-itm --as=it-lead approve amara.okafor "contract signed"
eventually "the approved joiner is Scheduled" "Scheduled" k get onb amara.okafor
expect "kubectl itm status shows the joiner" "lt-pf3x8k2q" kubectl-itm status amara.okafor

# A joiner starting today gets a working kubeconfig; offboarding revokes it.
k apply -f - >/dev/null <<'EOF'
apiVersion: itmanager.io/v1alpha1
kind: OnboardingRequest
metadata: {name: lena.fischer}
spec:
  person: {displayName: Lena Fischer, email: lena.fischer@example.com}
  groups: [engineering]
  approvalRequired: false
EOF
expect "kubectl wait for Ready" "condition met" k wait --for=condition=Ready --timeout=60s onb/lena.fischer
k -n itmanager-users get secret lena.fischer-kubeconfig -o 'jsonpath={.data.kubeconfig}' | base64 -d >"$work/lena.kubeconfig"
expect "her kubeconfig authenticates as her ServiceAccount" "system:serviceaccount:itmanager-users:lena.fischer" \
  k --kubeconfig "$work/lena.kubeconfig" auth whoami
eventually "her policy lets her read pods in grafana" "yes" \
  k --kubeconfig "$work/lena.kubeconfig" -n grafana auth can-i get pods
k patch onb lena.fischer --type=merge -p '{"spec":{"offboard":true}}' >/dev/null
eventually "offboarding keeps the record" "Offboarded" k get onb lena.fischer
for _ in $(seq 30); do
  out=$(k --kubeconfig "$work/lena.kubeconfig" auth whoami 2>&1) || break
  sleep 1
done
grep -q Unauthorized <<<"$out" && ok "her token stops working after offboarding" || bad "her token still works: $out"

# Ctrl-C, as a terminal sends it.
say "sending SIGINT to make dev's process group"
procs=$(pgrep -g "$pgid" | tr '\n' ' ')
kill -INT -- "-$pgid"
for _ in $(seq 60); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 1; done
if kill -0 "$dev_pid" 2>/dev/null; then bad "make dev still runs 60s after SIGINT"; else ok "make dev stopped on SIGINT"; fi
sleep 2
left=""
for p in $procs; do kill -0 "$p" 2>/dev/null && left+=" $p($(ps -o comm= -p "$p" 2>/dev/null))"; done
# Children in their own process group (the manager) or reparented ones:
# anything still running a binary from this checkout's bin/.
for p in $(pgrep -f "$root/bin/" || true); do left+=" $p($(ps -o comm= -p "$p" 2>/dev/null))"; done
[[ -z "$left" ]] && ok "no process make dev started is left" || bad "left running:$left"
[[ ! -e .dev/kubeconfig ]] && ok ".dev/kubeconfig removed on stop" || bad ".dev/kubeconfig left behind"
after=$(outside)
if [[ "$before" == "$after" ]]; then ok "nothing outside bin/ and .dev/ changed"; else
  bad "make dev changed files outside bin/ and .dev/:"
  diff <(echo "$before") <(echo "$after") | sed 's/^/    /'
fi
trap - EXIT
rm -rf "$work"

say "make dev was up in ${up}s"
echo "dev-smoke: $pass passed, $fail failed"
((fail == 0))
