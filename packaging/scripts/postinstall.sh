#!/bin/sh
# itmanager-agent postinstall (deb: postinst configure; rpm: %post).
# Works without a running systemd (containers, image builds, dpkg --root):
# systemctl is only asked to talk to systemd when systemd runs, and under
# dpkg --root ($DPKG_ROOT) only offline (--root) operations are done.
set -e
root=${DPKG_ROOT:-}
first_install=
case "$1" in
configure) [ -z "$2" ] && first_install=1 ;; # deb: $2 is the old version on upgrade
1) first_install=1 ;;                        # rpm: 1 = install, 2 = upgrade
abort-upgrade | abort-remove | abort-deconfigure) ;;
esac

# The enrolment directory holds the device token: root's only, whatever an
# earlier package or a hand-made directory left.
for d in "$root/etc/itmanager-agent" "$root/var/lib/itmanager-agent"; do
	mkdir -p "$d"
	chown root:root "$d"
	chmod 0700 "$d"
done

command -v systemctl >/dev/null 2>&1 || exit 0
if [ -n "$root" ]; then
	# dpkg --root: never touch this host's systemd; enable inside the root.
	if [ -n "$first_install" ]; then
		systemctl --root="$root" enable itmanager-agent.service >/dev/null 2>&1 || true
	fi
	exit 0
fi
running=
[ -d /run/systemd/system ] && running=1
if [ -n "$running" ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ -n "$first_install" ]; then
	# Enabled on install; started only once enrolled (the install script
	# starts it after unpacking the bundle), so an unenrolled host does not
	# restart the agent in a loop.
	systemctl enable itmanager-agent.service >/dev/null 2>&1 || true
	if [ -n "$running" ] && [ -s /etc/itmanager-agent/token ]; then
		systemctl start itmanager-agent.service || true
	fi
elif [ -n "${ITMANAGER_TARGET_VERSION:-}" ]; then
	# Upgraded by the agent's own --upgrade-command: a restart now would
	# stop the unit's cgroup, and with it the package manager mid-upgrade.
	# The new agent runs from the next restart or reboot.
	echo "itmanager-agent: upgraded during an itmanager upgrade; the new agent runs after the next restart or reboot"
elif [ -n "$running" ]; then
	systemctl try-restart itmanager-agent.service || true
fi
exit 0
