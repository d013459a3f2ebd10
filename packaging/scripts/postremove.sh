#!/bin/sh
# itmanager-agent postremove (deb: postrm; rpm: %postun). Removal keeps the
# enrolment (token) and the state so a reinstall checks in as the same
# device; purge (deb only) removes both. rpm has no purge: remove
# /etc/itmanager-agent and /var/lib/itmanager-agent by hand (docs/agent.md).
set -e
root=${DPKG_ROOT:-}
case "$1" in
purge)
	rm -rf "$root/var/lib/itmanager-agent" "$root/etc/itmanager-agent"
	rmdir "$root/etc/systemd/system/itmanager-agent.service.d" 2>/dev/null || true
	if [ -n "$root" ]; then
		# dpkg --root: systemctl --root enable made these in the root;
		# leave them only when something else is in them.
		rmdir "$root/etc/systemd/system/multi-user.target.wants" "$root/etc/systemd/system" "$root/etc/systemd" 2>/dev/null || true
	fi
	;;
esac
case "$1" in
remove | purge | 0)
	if [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		systemctl daemon-reload >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
