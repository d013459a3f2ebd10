# itmanager — see README.md. `make dev` and `make test` are all a newcomer needs.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

IMG ?= ghcr.io/itmanager-io/itmanager:dev
LOCALBIN ?= $(shell pwd)/bin

# Pinned tools (go install; see ../shared/TOOLCHAIN.md). Each binary carries
# its version in its name, so changing a version here rebuilds it.
CONTROLLER_TOOLS_VERSION ?= v0.23.0
GOLANGCI_LINT_VERSION ?= v2.15.0
KUSTOMIZE_VERSION ?= v5.8.2
HELM_VERSION ?= v3.22.0
# Release tools, each from its own tools module under hack/tools/<name>
# (go.mod pins the version; keep the two in step).
NFPM_VERSION ?= v2.45.2
GORELEASER_VERSION ?= v2.15.1
KREW_VERSION ?= v0.4.3
# promtool is built from the tools module hack/tools/prometheus, whose go.mod
# pins the same version.
PROMETHEUS_VERSION ?= v0.316.0

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
PROMTOOL ?= $(LOCALBIN)/promtool-$(PROMETHEUS_VERSION)
KUBECTL ?= $(LOCALBIN)/kubectl
NFPM ?= $(LOCALBIN)/nfpm-$(NFPM_VERSION)
GORELEASER ?= $(LOCALBIN)/goreleaser-$(GORELEASER_VERSION)
KREW_VALIDATE ?= $(LOCALBIN)/validate-krew-manifest-$(KREW_VERSION)

# Tests. Pure tests need nothing; integration tests need the real control
# plane built from source (hack/control-plane.sh) and a real slapd, and are
# the packages controllers/, api/ and test/ plus, under internal/, the files
# built only with the integration tag (//go:build integration). make test runs
# both; make test-unit only the pure ones (UNIT_PKGS: no integration tag, and
# ITMANAGER_UNIT_ONLY makes a test that still reaches for a server fail).
GO_TEST_FLAGS ?= -race -count=1
TEST_TIMEOUT ?= 20m
UNIT_PKGS ?= ./internal/... ./cmd/... ./hack/... ./config/... ./test/e2e/images/...
# make fuzz: how long each fuzz target runs after its seed corpus.
# An execution count (Nx), not a duration: with a duration, go1.26's fuzz
# coordinator can fail a target with a bare "context deadline exceeded" at
# the deadline (golang/go#75804, fixed in go1.27; seen in CI on FuzzAggregate).
FUZZTIME ?= 50000x

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: dev
dev: control-plane manifests ## Run a local control plane, the manager and the check-in service (each under its own RBAC) and the samples; Ctrl-C stops everything.
	go build -o $(LOCALBIN)/itmanager-dev ./hack/dev
	$(LOCALBIN)/itmanager-dev

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs, RBAC and webhook configuration, the Argo CD health checks, and copy the CRDs into the chart.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases
	go run ./hack/admissiongen config/admission/accesspolicy.yaml
	go run ./hack/argocdgen
	hack/sync-chart.sh

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet (on the integration tests too).
	go vet -tags integration ./...

.PHONY: verify
verify: $(CONTROLLER_GEN) ## Fail when generated files (CRDs, RBAC, webhooks, deepcopy, chart copies) are stale.
	hack/verify.sh

.PHONY: lint
lint: $(GOLANGCI_LINT) $(HELM) vet ## Run golangci-lint, go vet and helm lint.
	$(GOLANGCI_LINT) run ./...
	$(HELM) lint --strict charts/itmanager

.PHONY: control-plane
control-plane: ## Build etcd, kube-apiserver, kube-controller-manager and kubectl from source into bin/ (only what is missing).
	hack/control-plane.sh >/dev/null

.PHONY: test
test: control-plane manifests generate $(HELM) $(KUSTOMIZE) $(NFPM) $(PROMTOOL) ## Run every test: the pure ones, the integration ones against the real control plane built from source (and a real slapd), the agent packages in scratch roots, and promtool's tests of the alert rules.
	hack/install-slapd.sh
	hack/install-node-packages.sh package-tests
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh --print)" HELM="$(HELM)" KUSTOMIZE="$(KUSTOMIZE)" NFPM="$(NFPM)" \
		go test -tags integration $(GO_TEST_FLAGS) -timeout $(TEST_TIMEOUT) ./...
	cd hack/tools/prometheus && PROMTOOL="$(PROMTOOL)" go test $(GO_TEST_FLAGS) ./...

.PHONY: test-unit
test-unit: ## Run the pure tests only (no control plane, no slapd; under a minute).
	ITMANAGER_UNIT_ONLY=1 go test $(GO_TEST_FLAGS) $(UNIT_PKGS)

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 50000x: executions, or a duration such as 30s) after its seed corpus.
	hack/fuzz.sh $(FUZZTIME)

# The benchmark suite (test/bench): one program, one report. SCENARIOS picks
# a subset, BENCH_FLAGS adds flags (e.g. -devices 1000 -steady 2m).
SCENARIOS ?= onboarding,convergence,churn,steady,checkins,rollout
BENCH_FLAGS ?=
.PHONY: bench
bench: control-plane ## Run every benchmark scenario (~40 min, quiet machine) and write docs/benchmarks.md (refuses a dirty tree unless ALLOW_DIRTY=1).
	hack/install-slapd.sh
	go run ./test/bench -scenarios $(SCENARIOS) $(if $(ALLOW_DIRTY),-allow-dirty) $(BENCH_FLAGS)

.PHONY: bench-100k
bench-100k: control-plane ## Convergence, propagation under churn and RSS at 1,000 / 10,000 / 100,000 devices (about an hour; not in CI); writes the scale curve into docs/benchmarks.md.
	hack/install-slapd.sh
	go run ./test/bench -scenarios convergence,churn -curve 1000,10000,100000 $(if $(ALLOW_DIRTY),-allow-dirty) $(BENCH_FLAGS)

##@ Real cluster (root; one per machine)

# make cluster: a real single-node cluster from source (hack/cluster), in
# the foreground until Ctrl-C/SIGTERM; it writes .cluster/kubeconfig when
# the node is Ready. IMAGES: more podman images to import.
IMAGES ?=
CLUSTER_BIN ?= $(LOCALBIN)/itmanager-cluster

.PHONY: cluster
cluster: ## Run a real single-node cluster (root) until Ctrl-C or make cluster-down; writes .cluster/kubeconfig when Ready.
	@if [ "$$(id -u)" != 0 ]; then echo "make cluster needs root: it creates links, routes, nftables/iptables rules and runs kubelet and containerd (sudo make cluster)" >&2; exit 1; fi
	hack/install-node-packages.sh
	hack/control-plane.sh --node >/dev/null
	go build -o $(CLUSTER_BIN) ./hack/cluster
	IMG="$(IMG)" IMAGES="$(IMAGES)" $(CLUSTER_BIN) up

.PHONY: cluster-down
cluster-down: ## Stop the cluster of this checkout (make cluster) and wait until the host is restored.
	go build -o $(CLUSTER_BIN) ./hack/cluster
	$(CLUSTER_BIN) down

.PHONY: cluster-load
cluster-load: ## Import podman images (IMAGES="a b") into the running cluster's containerd.
	go build -o $(CLUSTER_BIN) ./hack/cluster
	$(CLUSTER_BIN) load $(IMAGES)

# make e2e: on the cluster of make cluster (.cluster/kubeconfig, or KUBECONFIG
# / E2E_CLUSTER_DIR), helm install the chart from this checkout with IMG
# (pullPolicy Never), then the Ginkgo suite test/e2e (tag and label e2e);
# writes and prints docs/e2e.md.
.PHONY: helm
helm: $(HELM) ## Build the pinned helm into bin/ (bin/helm-$(HELM_VERSION)), for installing the chart by hand.

.PHONY: e2e
e2e: $(HELM) ## Install the chart with IMG into the make cluster cluster and run the end-to-end suite (real Pods, packets and a node upgrade); writes docs/e2e.md.
	IMG=$(IMG) HELM=$(HELM) KUBECTL=$(KUBECTL) hack/e2e.sh

##@ Build

.PHONY: build
build: manifests generate ## Build the manager, the check-in service, the agent and the kubectl plugin into bin/.
	go build -o $(LOCALBIN)/manager .
	go build -o $(LOCALBIN)/itmanager-checkin ./cmd/itmanager-checkin
	go build -o $(LOCALBIN)/itmanager-agent ./cmd/itmanager-agent
	go build -o $(LOCALBIN)/kubectl-itm ./cmd/kubectl-itm
	install -m 0755 cmd/kubectl-itm/kubectl_complete-itm $(LOCALBIN)/kubectl_complete-itm

# The cluster's webhook configuration points at the in-cluster Service, so a
# locally run manager serves no webhook unless asked (ENABLE_WEBHOOKS=true,
# with tls.crt and tls.key in WEBHOOK_CERT_DIR).
ENABLE_WEBHOOKS ?= false
.PHONY: run
run: manifests generate ## Run the manager against the current kubeconfig.
	go run . --enable-webhooks=$(ENABLE_WEBHOOKS) --metrics-secure=false --metrics-bind-address=127.0.0.1:8080 \
		--health-probe-bind-address=127.0.0.1:8081 --webhook-cert-dir=$${WEBHOOK_CERT_DIR:-/tmp/k8s-webhook-server/serving-certs} --zap-devel

##@ Packages and releases

# make packages: the agent's .deb, .rpm and tarball for linux/amd64 and
# arm64 (nfpm, packaging/nfpm.yaml), the install script and checksums.txt,
# into dist/packages (hack/build-packages.sh; the version is VERSION).
DIST ?= $(CURDIR)/dist
.PHONY: packages
packages: $(NFPM) ## Build the agent's .deb, .rpm and tarball (linux amd64, arm64), install-agent.sh and checksums.txt into dist/packages.
	NFPM=$(NFPM) hack/build-packages.sh $(DIST)/packages $(VERSION) $(COMMIT)

# GORELEASER_FLAGS: e.g. --parallelism 1 on a shared machine. goreleaser
# reads the commit only from a clone with a remote (without one a snapshot
# says "none"); a checkout without one gets the project's URL for the run.
GORELEASER_FLAGS ?=
RELEASE_REMOTE ?= https://github.com/itmanager-io/itmanager.git
.PHONY: release-snapshot
release-snapshot: $(GORELEASER) $(HELM) $(KREW_VALIDATE) ## Build every release artifact with goreleaser into dist/release (binaries, archives, packages, chart, krew manifest, checksums) without publishing; validate the krew manifest.
	if git ls-remote --get-url >/dev/null 2>&1; then no_remote=; else no_remote=1; fi; \
	HELM=$(HELM) env $${no_remote:+GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=remote.origin.url GIT_CONFIG_VALUE_0=$(RELEASE_REMOTE)} \
		$(GORELEASER) release --snapshot --clean $(GORELEASER_FLAGS)
	$(KREW_VALIDATE) -manifest $(DIST)/release/krew/itm.yaml -skip-install

.PHONY: release-check
release-check: $(GORELEASER) ## Check .goreleaser.yaml (goreleaser check).
	$(GORELEASER) check

##@ Image

# The image (Containerfile) compiles nothing: static binaries are built here
# first, staged with a CA bundle and the nonroot user's passwd/group lines
# into a minimal build context under IMAGE_DIR, and copied FROM scratch. So
# Docker, podman and buildah build it alike, with no Go base image and no
# registry. VERSION and COMMIT are stamped into every binary (--version).
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
ifeq ($(origin COMMIT),undefined)
COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
endif
CONTAINER_TOOL ?= podman
# Extra flags for `$(CONTAINER_TOOL) build`. None are needed here: the
# Containerfiles only COPY (no RUN), so the build starts no container and
# neither the OCI runtime nor the hybrid cgroup hierarchy matters.
CONTAINER_BUILD_FLAGS ?=
# Flags for `$(CONTAINER_TOOL) run` on these machines: crun refuses the
# hybrid cgroup v1/v2 hierarchy (so runc), and podman's default ulimits need
# CAP_SYS_RESOURCE, which root here lacks (so explicit ones). Docker accepts
# them too.
CONTAINER_RUN_FLAGS ?= --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
# Build contexts (one directory per image, rebuilt each time).
IMAGE_DIR ?= $(CURDIR)/.image
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
GOARCH ?= $(shell go env GOARCH)
VERSION_PKG := github.com/itmanager-io/itmanager/internal/version
GO_BUILD_STATIC = CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) go build -trimpath \
	-ldflags "-s -w -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Commit=$(COMMIT)"
IMAGE_BUILD_ARGS = --build-arg VERSION=$(VERSION) --build-arg REVISION=$(COMMIT)

.PHONY: image
image: docker-build ## Build the image IMG (/manager and /itmanager-checkin, FROM scratch, user 65532) with CONTAINER_TOOL (podman).

.PHONY: docker-build
docker-build: ## Build static binaries, then IMG from Containerfile with CONTAINER_TOOL (podman; docker works the same).
	@if [ "$(CONTAINER_TOOL)" = podman ]; then hack/install-node-packages.sh image; fi
	@test -r $(CA_BUNDLE) || { echo "no CA bundle at $(CA_BUNDLE): install Debian's ca-certificates or set CA_BUNDLE" >&2; exit 1; }
	rm -rf $(IMAGE_DIR)/itmanager && mkdir -p $(IMAGE_DIR)/itmanager
	$(GO_BUILD_STATIC) -o $(IMAGE_DIR)/itmanager/manager .
	$(GO_BUILD_STATIC) -o $(IMAGE_DIR)/itmanager/itmanager-checkin ./cmd/itmanager-checkin
	install -m 0644 $(CA_BUNDLE) $(IMAGE_DIR)/itmanager/ca-certificates.crt
	install -m 0644 hack/image/passwd hack/image/group $(IMAGE_DIR)/itmanager/
	$(call container-build,$(IMG),Containerfile,$(IMAGE_DIR)/itmanager)

.PHONY: docker-push
docker-push: ## Push IMG with CONTAINER_TOOL.
	$(CONTAINER_TOOL) push $(IMG)

.PHONY: image-check
image-check: ## Run both entry points of IMG with --version and check that it runs as 65532:65532.
	$(CONTAINER_TOOL) run --rm $(CONTAINER_RUN_FLAGS) --entrypoint /manager $(IMG) --version
	$(CONTAINER_TOOL) run --rm $(CONTAINER_RUN_FLAGS) --entrypoint /itmanager-checkin $(IMG) --version
	@user=$$($(CONTAINER_TOOL) image inspect --format '{{.Config.User}}' $(IMG)); \
		test "$$user" = 65532:65532 || { echo "$(IMG) runs as '$$user', not 65532:65532" >&2; exit 1; }; \
		echo "$(IMG) runs as $$user"

# Test images for make e2e, each a tiny static Go program under
# test/e2e/images/<name> with its own Containerfile, tagged
# $(E2E_IMAGE_PREFIX)<name>:$(E2E_IMAGE_TAG): pause (the sandbox image),
# upgrade (a node upgrade that writes under /host and reports its version)
# and probe (HTTP/TCP server and client for Pods).
E2E_IMAGES ?= pause upgrade probe
E2E_IMAGE_PREFIX ?= localhost/itmanager-e2e-
E2E_IMAGE_TAG ?= dev

.PHONY: e2e-images
e2e-images: $(addprefix e2e-image-,$(E2E_IMAGES)) ## Build the e2e test images (localhost/itmanager-e2e-{pause,upgrade,probe}:dev).

.PHONY: e2e-image-%
e2e-image-%:
	@if [ "$(CONTAINER_TOOL)" = podman ]; then hack/install-node-packages.sh image; fi
	rm -rf $(IMAGE_DIR)/e2e-$* && mkdir -p $(IMAGE_DIR)/e2e-$*
	$(GO_BUILD_STATIC) -o $(IMAGE_DIR)/e2e-$*/$* ./test/e2e/images/$*
	$(call container-build,$(E2E_IMAGE_PREFIX)$*:$(E2E_IMAGE_TAG),test/e2e/images/$*/Containerfile,$(IMAGE_DIR)/e2e-$*)

# container-build builds tag $(1) from Containerfile $(2) in context $(3),
# then removes the image that tag named before, if it changed and nothing
# uses it, so rebuilds do not pile up untagged images of ~90 MB.
define container-build
@set -e; old=$$($(CONTAINER_TOOL) image inspect --format '{{.Id}}' $(1) 2>/dev/null || true); \
echo "$(CONTAINER_TOOL) build $(CONTAINER_BUILD_FLAGS) $(IMAGE_BUILD_ARGS) -t $(1) -f $(2) $(3)"; \
$(CONTAINER_TOOL) build $(CONTAINER_BUILD_FLAGS) $(IMAGE_BUILD_ARGS) -t $(1) -f $(2) $(3); \
new=$$($(CONTAINER_TOOL) image inspect --format '{{.Id}}' $(1)); \
if [ -n "$$old" ] && [ "$$old" != "$$new" ]; then $(CONTAINER_TOOL) rmi "$$old" >/dev/null 2>&1 || true; fi
endef

##@ Deployment

.PHONY: install
install: manifests $(KUSTOMIZE) ## Install the CRDs into the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) apply --server-side -f -

.PHONY: uninstall
uninstall: manifests $(KUSTOMIZE) ## Remove the CRDs from the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests $(KUSTOMIZE) ## Deploy the operator (config/default) to the cluster of the current kubeconfig.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: $(KUSTOMIZE) ## Remove the operator (config/default) from the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found -f -

##@ Tools

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

$(CONTROLLER_GEN): | $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

$(GOLANGCI_LINT): | $(LOCALBIN)
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

$(KUSTOMIZE): | $(LOCALBIN)
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

$(HELM): | $(LOCALBIN)
	$(call go-install-tool,$(HELM),helm.sh/helm/v3/cmd/helm,$(HELM_VERSION))

$(NFPM): | $(LOCALBIN)
	$(call tools-module-build,$(NFPM),nfpm,github.com/goreleaser/nfpm/v2/cmd/nfpm)

$(GORELEASER): | $(LOCALBIN)
	$(call tools-module-build,$(GORELEASER),goreleaser,github.com/goreleaser/goreleaser/v2)

$(KREW_VALIDATE): | $(LOCALBIN)
	$(call tools-module-build,$(KREW_VALIDATE),krew,sigs.k8s.io/krew/cmd/validate-krew-manifest)

# tools-module-build builds package $(3) of the tools module hack/tools/$(2)
# (its go.mod and go.sum pin every version) as the file $(1).
define tools-module-build
@set -e; echo "Building $(3) from hack/tools/$(2)"; \
cd hack/tools/$(2) && CGO_ENABLED=0 go build -trimpath -o $(1).tmp $(3) && mv $(1).tmp $(1)
endef
.PHONY: promtool
promtool: $(PROMTOOL) ## Build the pinned promtool into bin/ (bin/promtool-$(PROMETHEUS_VERSION)), which checks and unit-tests the alert rules.

$(PROMTOOL): | $(LOCALBIN)
	@grep -q 'github.com/prometheus/prometheus $(PROMETHEUS_VERSION)$$' hack/tools/prometheus/go.mod || \
		{ echo "hack/tools/prometheus/go.mod does not pin github.com/prometheus/prometheus $(PROMETHEUS_VERSION)" >&2; exit 1; }
	cd hack/tools/prometheus && CGO_ENABLED=0 go build -trimpath -o $(PROMTOOL).tmp github.com/prometheus/prometheus/cmd/promtool
	mv $(PROMTOOL).tmp $(PROMTOOL)

# go-install-tool installs package $(2) at version $(3) as the file $(1).
define go-install-tool
@set -e; tmp=$$(mktemp -d); \
echo "Installing $(2)@$(3)"; \
GOBIN=$$tmp go install $(2)@$(3); \
mv $$tmp/$$(basename $$(echo $(2) | sed 's|/v[0-9]*$$||')) $(1); rm -rf $$tmp
endef
