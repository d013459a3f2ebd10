#!/usr/bin/env bash
# make e2e: install the chart from this checkout into the cluster of
# `make cluster` (or KUBECONFIG / E2E_CLUSTER_DIR) with the local image, then
# run the Ginkgo suite test/e2e (build tag e2e, label e2e) against it and
# print its report (docs/e2e.md).
#
#   hack/e2e.sh          install, run the suite, print the report
#   hack/e2e.sh install  only install (or upgrade to) the e2e values; the
#                        suite calls this to reinstall after `helm uninstall`
#
# The check-in Service gets a fixed ClusterIP (the chart's
# checkin.service.clusterIP: E2E_CHECKIN_IP, default the 44th address of
# SERVICE_CIDR) so the URL and certificate the manager writes into every
# enrolment Secret name an address the test devices (network namespaces
# without DNS) reach.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cluster_dir=${E2E_CLUSTER_DIR:-$root/.cluster}
export KUBECONFIG=${KUBECONFIG:-$cluster_dir/kubeconfig}
HELM=${HELM:-$root/bin/helm-v3.22.0}
KUBECTL=${KUBECTL:-$root/bin/kubectl}
IMG=${IMG:-ghcr.io/itmanager-io/itmanager:dev}
RELEASE=${E2E_RELEASE:-itmanager}
NAMESPACE=${E2E_NAMESPACE:-itmanager-system}
VALUES=${E2E_VALUES:-$cluster_dir/e2e-values.yaml}
REPORT=${E2E_REPORT:-$root/docs/e2e.md}
CHART=${E2E_CHART:-$root/charts/itmanager}

die() { echo "e2e: $*" >&2; exit 1; }

[[ -f $KUBECONFIG ]] || die "no cluster: $KUBECONFIG does not exist. Start one with 'make cluster' (it writes .cluster/kubeconfig when the node is Ready), or point KUBECONFIG or E2E_CLUSTER_DIR at a running one."
[[ -f $cluster_dir/env ]] || die "no $cluster_dir/env (NODE_NAME, SERVICE_CIDR, DEVICE_CIDR, ... written by make cluster)"
[[ -x $HELM ]] || die "no helm at $HELM (make $HELM)"
# shellcheck disable=SC1091
source "$cluster_dir/env"
$KUBECTL version >/dev/null 2>&1 || die "the API server in $KUBECONFIG does not answer"

install() {
	local ip
	ip=$($KUBECTL -n "$NAMESPACE" get service itmanager-checkin -o jsonpath='{.spec.clusterIP}' 2>/dev/null || true)
	if [[ -z $ip ]]; then
		ip=${E2E_CHECKIN_IP:-}
		if [[ -z $ip ]]; then
			local net=${SERVICE_CIDR%/*}
			ip=${net%.*}.$(( ${net##*.} + 44 ))
		fi
	fi
	local repo=${IMG%:*} tag=${IMG##*:}
	[[ $IMG == *:* && $tag != */* ]] || { repo=$IMG; tag=latest; }
	cat >"$VALUES" <<EOF
# Written by hack/e2e.sh for make e2e.
image:
  repository: $repo
  tag: "$tag"
  pullPolicy: Never
checkin:
  # A fixed ClusterIP: the devices have no DNS.
  url: https://$ip
  certHosts: [$ip, itmanager-checkin.$NAMESPACE.svc]
  service:
    clusterIP: $ip
  # Short, so a silent device goes stale within seconds. A posture change
  # does not wait for the interval: the agent sees it within its fact poll
  # (1s) and checks in at once, no sooner than minInterval after its last
  # check-in.
  staleAfter: 30s
  interval: 5s
  minInterval: 1s
# Nothing about the drain: the chart labels itmanager's own Pods
# itmanager.io/drain=skip, so the upgrade of the only node leaves them
# running to finish it (docs/maintenance.md).
EOF
	$KUBECTL get namespace "$NAMESPACE" >/dev/null 2>&1 || $KUBECTL create namespace "$NAMESPACE" >/dev/null
	echo "e2e: helm upgrade --install $RELEASE (image $IMG, check-in at https://$ip)"
	$HELM upgrade --install "$RELEASE" "$CHART" -n "$NAMESPACE" -f "$VALUES" --wait --timeout 5m
	$KUBECTL -n "$NAMESPACE" wait --for=condition=Available --timeout=3m deployment --all
}

case ${1:-run} in
install)
	install
	;;
run)
	start=$(date +%s)
	install
	echo "e2e: install took $(( $(date +%s) - start ))s"
	export E2E_CLUSTER_DIR=$cluster_dir E2E_CHART=$CHART E2E_VALUES=$VALUES E2E_REPORT=$REPORT E2E_RELEASE=$RELEASE E2E_NAMESPACE=$NAMESPACE HELM KUBECTL IMG
	rc=0
	(cd "$root" && go test -tags e2e ./test/e2e/ -count=1 -timeout 30m -v -args -ginkgo.v -ginkgo.label-filter=e2e) || rc=$?
	[[ -f $REPORT ]] && cat "$REPORT"
	# Nothing may leave the machine: make cluster's nftables guard counts
	# (and drops) what would; every counter must read 0.
	if [[ -n ${GUARD_TABLE:-} ]] && command -v nft >/dev/null; then
		echo "e2e: guard counters (table inet $GUARD_TABLE; all must be 0):"
		nft list counters table inet "$GUARD_TABLE" | awk '/counter/ {name=$2} /packets/ {print "  " name ": " $2 " packets, " $4 " bytes"; if ($2 != 0) bad=1} END {exit bad}' || {
			echo "e2e: packets tried to leave the machine" >&2
			rc=1
		}
	fi
	exit $rc
	;;
*)
	die "unknown command $1 (run or install)"
	;;
esac
