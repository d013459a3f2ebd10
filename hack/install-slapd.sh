#!/usr/bin/env bash
# Installs OpenLDAP's slapd and the ldap-utils from Debian's packages when
# they are missing, for the LDAP provider's tests (which start their own
# slapd on 127.0.0.1 from a temp dir; the package's own service is never
# started or configured). Needs root, or is a no-op when slapd is present.
set -euo pipefail
if command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "slapd is missing: run as root, or: sudo apt-get install -y slapd ldap-utils" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The package would start a system slapd; forbid it (our tests run their own).
policy=/usr/sbin/policy-rc.d
created=
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod +x "$policy"
	created=1
fi
trap '[ -n "$created" ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends slapd ldap-utils >/dev/null
echo "installed: $(/usr/sbin/slapd -VV 2>&1 | head -1)"
