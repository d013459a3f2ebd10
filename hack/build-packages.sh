#!/usr/bin/env bash
# Builds the agent's release artifacts for Linux into OUT (make packages:
# dist/packages; test/packages: a temp dir), the same names and layout as
# the release (.goreleaser.yaml):
#   itmanager-agent_<version>_linux_<arch>.deb     (nfpm, packaging/nfpm.yaml)
#   itmanager-agent-<version>-1.<x86_64|aarch64>.rpm
#   itmanager-agent_<version>_linux_<arch>.tar.gz  (binary, systemd/, default/)
#   install-agent.sh, checksums.txt
# Usage: NFPM=bin/nfpm-v2.45.2 hack/build-packages.sh OUT VERSION [COMMIT]
# VERSION is the binary's (e.g. v0.2.0, or git describe's); the packages'
# version is it without the v, or 0.0.0-dev+COMMIT when it is no semver.
# ARCHES (default "amd64 arm64") picks the architectures.
set -euo pipefail
out=${1:?usage: hack/build-packages.sh OUT VERSION [COMMIT]}
version=${2:?usage: hack/build-packages.sh OUT VERSION [COMMIT]}
commit=${3:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
nfpm=${NFPM:?NFPM must name the nfpm binary (make packages builds it)}
cd "$(dirname "$0")/.."
semver='^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$'
if [[ $version =~ $semver ]]; then
	pkg_version=${version#v}
else
	pkg_version=0.0.0-dev+$commit
fi
version_pkg=github.com/itmanager-io/itmanager/internal/version
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for arch in ${ARCHES:-amd64 arm64}; do
	case $arch in
	amd64) rpm_arch=x86_64 ;;
	arm64) rpm_arch=aarch64 ;;
	*) echo "unsupported architecture $arch" >&2; exit 1 ;;
	esac
	bin=$work/$arch/itmanager-agent
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath \
		-ldflags "-s -w -X $version_pkg.Version=$version -X $version_pkg.Commit=$commit" \
		-o "$bin" ./cmd/itmanager-agent
	for packager in deb rpm; do
		if [ $packager = deb ]; then
			target=$out/itmanager-agent_${pkg_version}_linux_${arch}.deb
		else
			target=$out/itmanager-agent-${pkg_version}-1.${rpm_arch}.rpm
		fi
		VERSION=$pkg_version ARCH=$arch AGENT_BINARY=$bin \
			"$nfpm" package --config packaging/nfpm.yaml --packager $packager --target "$target" >/dev/null
	done
	# The tarball: what install-agent.sh installs where no package manager is.
	tree=$work/$arch/tree
	install -D -m 0755 "$bin" "$tree/itmanager-agent"
	install -D -m 0644 -t "$tree/systemd" packaging/systemd/itmanager-agent.service packaging/systemd/upgrade-command.conf
	install -D -m 0644 -t "$tree/default" packaging/default/itmanager-agent
	tar -C "$tree" --owner=0 --group=0 --numeric-owner -czf "$out/itmanager-agent_${pkg_version}_linux_${arch}.tar.gz" \
		itmanager-agent systemd default
done
install -m 0755 packaging/install-agent.sh "$out/install-agent.sh"
(cd "$out" && sha256sum -- *.deb *.rpm *.tar.gz install-agent.sh >checksums.txt)
ls -1 "$out"
