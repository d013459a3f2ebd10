#!/usr/bin/env bash
# Runs every fuzz target of the repository (each `func FuzzXxx(f *testing.F)`
# in a _test.go file) for FUZZTIME, one after the other: `go test -fuzz` takes
# one target of one package at a time (FUZZTIME: an execution count such as
# 50000x, or a duration; a duration can fail spuriously on go1.26, golang/go#75804).
# Each first runs its seed corpus; an
# input that fails is written under the package's testdata/fuzz/ and fails
# the run. Usage: hack/fuzz.sh [FUZZTIME] (default 50000x; make fuzz FUZZTIME=…).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-50000x}

mapfile -t found < <(grep -rHoE --include='*_test.go' --exclude-dir=bin --exclude-dir=.git \
	'^func Fuzz[A-Za-z0-9_]*\(' . | sed -E 's|^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($|\1 \2|' | sort -u)
if [ ${#found[@]} -eq 0 ]; then
	echo "no fuzz targets found" >&2
	exit 1
fi
for entry in "${found[@]}"; do
	read -r dir target <<<"$entry"
	start=$(date +%s)
	echo "-- fuzz ./$dir $target for $fuzztime"
	go test "./$dir" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime"
	echo "-- ./$dir $target: $(( $(date +%s) - start ))s"
done
echo "fuzzed ${#found[@]} targets"
