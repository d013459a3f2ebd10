#!/bin/sh
# Installs itmanager-agent on a Linux host (docs/agent.md):
#
#   curl -fsSLO https://github.com/itmanager-io/itmanager/releases/latest/download/install-agent.sh
#   sudo sh install-agent.sh --bundle itmanager-enrolment.tar.gz
#
# It picks the host's package format (.deb where dpkg keeps a database, .rpm
# where rpm does, else the tarball: binary, unit, config and directories),
# verifies every download against the release's checksums.txt, unpacks the
# enrolment bundle (exactly url, token and ca.crt; anything else refuses)
# into /etc/itmanager-agent, and enables and starts itmanager-agent.service.
#
# Flags:
#   --bundle FILE    enrolment bundle (kubectl itm enroll <device>)
#   --version V      release to install (default: the latest)
#   --base-url URL   where releases are, as URL/v<version>/<file> (needs
#                    --version; default: GitHub's release downloads)
#   --from DIR       take checksums.txt and the artifacts from DIR (no download)
#   --root DIR       install into DIR, a scratch root (no systemctl)
#   --no-start       do not enable or start the unit
set -eu

base_url=https://github.com/itmanager-io/itmanager/releases/download
latest_url=https://github.com/itmanager-io/itmanager/releases/latest/download
bundle=
version=
base_set=
from=
root=
no_start=

die() {
	echo "install-agent.sh: $*" >&2
	exit 1
}
usage() {
	sed -n '/^# Flags:/,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
	exit 2
}
need_arg() {
	if [ "$#" -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value"; fi
}

while [ "$#" -gt 0 ]; do
	case "$1" in
	--bundle) need_arg "$@"; bundle=$2; shift 2 ;;
	--version) need_arg "$@"; version=${2#v}; shift 2 ;;
	--base-url) need_arg "$@"; base_url=${2%/}; base_set=1; shift 2 ;;
	--from) need_arg "$@"; from=$2; shift 2 ;;
	--root) need_arg "$@"; root=${2%/}; shift 2 ;;
	--no-start) no_start=1; shift ;;
	-h | --help) usage ;;
	*) die "unknown argument: $1 (--help lists the flags)" ;;
	esac
done

if [ -n "$root" ]; then
	[ -d "$root" ] || die "--root $root is not a directory"
	root=$(cd "$root" && pwd)
	[ "$root" != / ] || root=
fi
# After --root / became the host itself.
[ -n "$root" ] || [ "$(id -u)" = 0 ] || die "run as root (sudo sh install-agent.sh ...), or give --root DIR"
case "$base_url" in
https://*) ;;
*) die "--base-url must be an https:// URL (checksums.txt is verified over it)" ;;
esac
[ -z "$bundle" ] || [ -f "$bundle" ] || die "--bundle $bundle: no such file"
[ -z "$from" ] || [ -d "$from" ] || die "--from $from is not a directory"
[ -z "$base_set" ] || [ -n "$version" ] || [ -n "$from" ] || die "--base-url needs --version (files are at URL/v<version>/<file>)"

case "$(uname -m)" in
x86_64 | amd64) arch=amd64 rpm_arch=x86_64 ;;
aarch64 | arm64) arch=arm64 rpm_arch=aarch64 ;;
*) die "unsupported architecture $(uname -m) (amd64 and arm64 are released)" ;;
esac

if [ -n "$root" ]; then
	if [ -f "$root/var/lib/dpkg/status" ]; then format=deb
	elif [ -d "$root/var/lib/rpm" ] || [ -d "$root/usr/lib/sysimage/rpm" ]; then format=rpm
	else format=tarball; fi
elif command -v dpkg >/dev/null 2>&1 && [ -f /var/lib/dpkg/status ]; then format=deb
elif command -v rpm >/dev/null 2>&1 && { [ -d /var/lib/rpm ] || [ -d /usr/lib/sysimage/rpm ]; }; then format=rpm
else format=tarball; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/itmanager-agent.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'rm -rf "$work"; exit 130' INT TERM
chmod 0700 "$work"

# fetch NAME: checksums.txt or an artifact into $work, from --from or the
# release (of --version, or the latest).
fetch() {
	if [ -n "$from" ]; then
		[ -f "$from/$1" ] || die "$from/$1: no such file"
		cp "$from/$1" "$work/$1"
		return
	fi
	if [ -n "$version" ]; then url="$base_url/v$version/$1"
	else url="$latest_url/$1"; fi
	echo "Downloading $url"
	if command -v curl >/dev/null 2>&1; then
		# HTTPS only, redirects included: checksums.txt comes over the same
		# channel as the artifact, so a plain-HTTP hop could swap both.
		curl -fsSL --proto '=https' --proto-redir '=https' --tlsv1.2 -o "$work/$1" "$url" || die "download of $url failed"
	elif command -v wget >/dev/null 2>&1; then
		wget -q --https-only --secure-protocol=TLSv1_2 -O "$work/$1" "$url" || die "download of $url failed"
	else
		die "neither curl nor wget is installed (or use --from DIR)"
	fi
}

sha256() {
	if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
	elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
	else die "no sha256sum or shasum to verify the download"; fi
}

fetch checksums.txt
if [ -z "$version" ]; then
	# The latest release: its version is in its agent tarball's name.
	version=$(sed -n "s/^[0-9a-f]\{64\}  itmanager-agent_\(.*\)_linux_${arch}\.tar\.gz\$/\1/p" "$work/checksums.txt" | head -n 1)
	[ -n "$version" ] || die "checksums.txt names no itmanager-agent_<version>_linux_${arch}.tar.gz"
fi
case "$format" in
deb) artifact="itmanager-agent_${version}_linux_${arch}.deb" ;;
rpm) artifact="itmanager-agent-${version}-1.${rpm_arch}.rpm" ;;
tarball) artifact="itmanager-agent_${version}_linux_${arch}.tar.gz" ;;
esac
fetch "$artifact"
want=$(awk -v f="$artifact" '$2 == f || $2 == "*" f { print $1 }' "$work/checksums.txt")
[ -n "$want" ] || die "checksums.txt has no entry for $artifact: refusing to install it"
got=$(sha256 "$work/$artifact")
[ "$got" = "$want" ] || die "$artifact: checksum mismatch (sha256 $got, checksums.txt says $want): refusing to install it"
echo "Verified $artifact (sha256 $got)"

# check_bundle: exactly the regular files url, token and ca.crt, each once
# (url and token not empty; an empty ca.crt means the system roots, as
# the agent and kubectl itm enroll have it), unpacked into $work/bundle
# before anything is installed. Anything else (a directory, a link, a path,
# another entry) refuses. The bundle is copied once first, so every check
# reads the same bytes the extraction does.
check_bundle() {
	cp "$bundle" "$work/bundle.tgz" || die "cannot read $bundle"
	src=$bundle
	bundle=$work/bundle.tgz
	names=$(tar -tzf "$bundle") || die "$src is not a gzipped tar"
	[ "$(printf '%s\n' "$names" | sort | tr '\n' ' ')" = "ca.crt token url " ] ||
		die "$src must hold exactly url, token and ca.crt, it holds: $(printf '%s' "$names" | tr '\n' ' ')"
	# Regular files only: a verbose listing starts each entry with its type.
	tar -tvzf "$bundle" | while IFS= read -r line; do
		case "$line" in
		-*) ;;
		*) die "$src: not a regular file: $line" ;;
		esac
	done || exit 1
	mkdir "$work/bundle"
	(cd "$work/bundle" && tar --no-same-owner --no-same-permissions -xzf "$bundle" url token ca.crt) </dev/null || die "cannot unpack $src"
	for f in url token ca.crt; do
		if [ ! -f "$work/bundle/$f" ] || [ -L "$work/bundle/$f" ]; then
			die "$src: $f is not a regular file"
		fi
	done
	for f in url token; do
		[ -s "$work/bundle/$f" ] || die "$src: $f is empty"
	done
	[ "$(find "$work/bundle" -mindepth 1 | wc -l)" -eq 3 ] || die "$src unpacked more than url, token and ca.crt"
}

# install_bundle: the checked files into the enrolment directory, 0600.
install_bundle() {
	dir="$root/etc/itmanager-agent"
	mkdir -p "$dir"
	[ ! -L "$dir" ] || die "$dir is a symbolic link"
	chmod 0700 "$dir"
	for f in url token ca.crt; do
		install -m 0600 "$work/bundle/$f" "$dir/.$f.new"
		[ "$(id -u)" != 0 ] || chown 0:0 "$dir/.$f.new"
		mv -f "$dir/.$f.new" "$dir/$f"
	done
	echo "Enrolment installed in $dir"
}

case "$bundle" in
/*) ;;
?*) bundle="$(pwd)/$bundle" ;;
esac
[ -z "$bundle" ] || check_bundle

case "$format" in
deb)
	if [ -n "$root" ]; then
		# A scratch root: its own dpkg database; scripts run on this host
		# with $DPKG_ROOT set (they never call this host's systemd then).
		mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
		touch "$root/var/lib/dpkg/available"
		dpkg --root="$root" --force-script-chrootless --force-not-root -i "$work/$artifact"
	else
		dpkg -i "$work/$artifact"
	fi
	;;
rpm)
	rpm ${root:+--root="$root"} -U --replacepkgs "$work/$artifact"
	;;
tarball)
	mkdir "$work/tarball"
	tar -xzf "$work/$artifact" -C "$work/tarball"
	t="$work/tarball"
	for f in itmanager-agent systemd/itmanager-agent.service systemd/upgrade-command.conf default/itmanager-agent; do
		[ -f "$t/$f" ] || die "$artifact has no $f"
	done
	install -d -m 0755 "$root/usr/bin" "$root/usr/lib/systemd/system" "$root/usr/share/itmanager-agent" "$root/etc/default"
	install -m 0755 "$t/itmanager-agent" "$root/usr/bin/itmanager-agent"
	install -m 0644 "$t/systemd/itmanager-agent.service" "$root/usr/lib/systemd/system/itmanager-agent.service"
	install -m 0644 "$t/systemd/upgrade-command.conf" "$root/usr/share/itmanager-agent/upgrade-command.conf"
	# The configuration is the host's: kept when it exists.
	[ -e "$root/etc/default/itmanager-agent" ] || install -m 0644 "$t/default/itmanager-agent" "$root/etc/default/itmanager-agent"
	install -d -m 0700 "$root/etc/itmanager-agent" "$root/var/lib/itmanager-agent"
	echo "Installed $root/usr/bin/itmanager-agent ($("$root/usr/bin/itmanager-agent" --version 2>/dev/null || echo "version $version"))"
	;;
esac

[ -z "$bundle" ] || install_bundle

if [ -n "$root" ] || [ -n "$no_start" ]; then
	echo "Not starting itmanager-agent.service (${root:+--root}${no_start:+--no-start})"
	exit 0
fi
if ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then
	echo "systemd is not running: start /usr/bin/itmanager-agent under this host's service manager"
	exit 0
fi
systemctl daemon-reload
systemctl enable itmanager-agent.service
if [ -s /etc/itmanager-agent/token ]; then
	systemctl restart itmanager-agent.service
	echo "itmanager-agent.service is enabled and started"
else
	echo "itmanager-agent.service is enabled; it starts once enrolled: sh install-agent.sh --bundle FILE, or put url, token and ca.crt into /etc/itmanager-agent"
fi
