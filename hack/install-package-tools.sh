#!/usr/bin/env bash
# Installs the tools the agent package tests need from Debian's packages when
# they are missing: dpkg (installs the .deb into a scratch root), systemd's
# systemd-analyze (verifies the unit), rpm (reads the .rpm's metadata) and
# shellcheck (lints the install script). Nothing is installed onto this
# machine from the project's own packages. Needs root, or is a no-op when
# every tool is present.
set -euo pipefail
declare -A pkg=([dpkg]=dpkg [systemd-analyze]=systemd [rpm]=rpm [shellcheck]=shellcheck)
missing=()
for tool in "${!pkg[@]}"; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("${pkg[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing for the package tests: ${missing[*]}: run as root, or: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
