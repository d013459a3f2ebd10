#!/usr/bin/env bash
# Installs, from Debian's packages and only when missing, what make image
# and make cluster need on the host: podman (image builds), runc and the CNI
# plugins (the node's runtime and pod network), iptables, ipset and nftables
# (kube-proxy, kube-router and the guard that keeps every packet on the
# machine), iproute2 and conntrack, and the CA bundle copied into the image.
# No package's own service is started. Needs root, or is a no-op when all are
# present.
#
#   hack/install-node-packages.sh                everything for the image and the node
#   hack/install-node-packages.sh image          only what make image needs
#   hack/install-node-packages.sh package-tests  what make test's agent package
#     tests need: dpkg (the .deb into a scratch root), systemd's
#     systemd-analyze (the unit), rpm (the .rpm's metadata), shellcheck (the
#     install script); nothing of the project's own packages is installed
#     onto this machine
set -euo pipefail

# command-or-path:package pairs.
image=(podman:podman /etc/ssl/certs/ca-certificates.crt:ca-certificates)
node=(runc:runc /usr/lib/cni/bridge:containernetworking-plugins iptables:iptables
	ipset:ipset nft:nftables ip:iproute2 conntrack:conntrack)
package_tests=(dpkg:dpkg systemd-analyze:systemd rpm:rpm shellcheck:shellcheck)
case "${1:-}" in
image) want=("${image[@]}") ;;
package-tests) want=("${package_tests[@]}") ;;
"") want=("${image[@]}" "${node[@]}") ;;
*) echo "usage: $0 [image|package-tests]" >&2; exit 2 ;;
esac

missing=()
for pair in "${want[@]}"; do
	what=${pair%%:*} pkg=${pair#*:}
	if [[ "$what" == /* ]]; then
		[[ -e "$what" ]] && continue
	elif command -v "$what" >/dev/null 2>&1 || [[ -x "/usr/sbin/$what" ]]; then
		continue
	fi
	missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

if [[ "$(id -u)" != 0 ]]; then
	echo "missing Debian packages: ${missing[*]}: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
created=
if [[ ! -e "$policy" ]]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod +x "$policy"
	created=1
fi
trap '[[ -n "$created" ]] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
