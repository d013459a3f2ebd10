#!/bin/sh
# itmanager-agent preremove (deb: prerm; rpm: %preun). On removal (not on
# upgrade) stop and disable the unit; tolerates no running systemd and
# dpkg --root ($DPKG_ROOT: offline disable inside the root only).
set -e
root=${DPKG_ROOT:-}
case "$1" in
remove | 0) ;;  # deb remove, rpm erase
*) exit 0 ;;    # upgrade, deconfigure, failed-upgrade: keep it running
esac
command -v systemctl >/dev/null 2>&1 || exit 0
if [ -n "$root" ]; then
	systemctl --root="$root" disable itmanager-agent.service >/dev/null 2>&1 || true
	exit 0
fi
if [ -d /run/systemd/system ]; then
	systemctl stop itmanager-agent.service >/dev/null 2>&1 || true
fi
systemctl disable itmanager-agent.service >/dev/null 2>&1 || true
exit 0
