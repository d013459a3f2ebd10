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

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
KUBECTL ?= $(LOCALBIN)/kubectl

# Tests. Pure tests need nothing; integration tests need the real control
# plane built from source (hack/control-plane.sh) and a real slapd, and are
# the packages controllers/, api/ and test/ plus, under internal/, the files
# built only with the integration tag (//go:build integration). make test runs
# both; make test-unit only the pure ones (UNIT_PKGS: no integration tag, and
# ITMANAGER_UNIT_ONLY makes a test that still reaches for a server fail).
GO_TEST_FLAGS ?= -race -count=1
TEST_TIMEOUT ?= 20m
UNIT_PKGS ?= ./internal/... ./cmd/... ./hack/...
# make fuzz: how long each fuzz target runs after its seed corpus.
FUZZTIME ?= 10s

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
manifests: $(CONTROLLER_GEN) ## Generate CRDs, RBAC and webhook configuration, and copy the CRDs into the chart.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases
	go run ./hack/admissiongen config/admission/accesspolicy.yaml
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
test: control-plane manifests generate $(HELM) $(KUSTOMIZE) ## Run every test: the pure ones and the integration ones against the real control plane built from source (and a real slapd).
	hack/install-slapd.sh
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh --print)" HELM="$(HELM)" KUSTOMIZE="$(KUSTOMIZE)" \
		go test -tags integration $(GO_TEST_FLAGS) -timeout $(TEST_TIMEOUT) ./...

.PHONY: test-unit
test-unit: ## Run the pure tests only (no control plane, no slapd; under a minute).
	ITMANAGER_UNIT_ONLY=1 go test $(GO_TEST_FLAGS) $(UNIT_PKGS)

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 10s) after its seed corpus.
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

# make e2e: on the cluster of make cluster (.cluster/kubeconfig, or KUBECONFIG
# / E2E_CLUSTER_DIR), helm install the chart from this checkout with IMG
# (pullPolicy Never), then the Ginkgo suite test/e2e (tag and label e2e);
# writes and prints docs/e2e.md.
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

# The cluster's webhook configuration points at the in-cluster Service, so a
# locally run manager serves no webhook unless asked (ENABLE_WEBHOOKS=true,
# with tls.crt and tls.key in WEBHOOK_CERT_DIR).
ENABLE_WEBHOOKS ?= false
.PHONY: run
run: manifests generate ## Run the manager against the current kubeconfig.
	go run . --enable-webhooks=$(ENABLE_WEBHOOKS) --metrics-secure=false --metrics-bind-address=127.0.0.1:8080 \
		--health-probe-bind-address=127.0.0.1:8081 --webhook-cert-dir=$${WEBHOOK_CERT_DIR:-/tmp/k8s-webhook-server/serving-certs} --zap-devel

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

# go-install-tool installs package $(2) at version $(3) as the file $(1).
define go-install-tool
@set -e; tmp=$$(mktemp -d); \
echo "Installing $(2)@$(3)"; \
GOBIN=$$tmp go install $(2)@$(3); \
mv $$tmp/$$(basename $$(echo $(2) | sed 's|/v[0-9]*$$||')) $(1); rm -rf $$tmp
endef
