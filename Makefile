# Fashion-MNIST, trained by several workers, tracked, promoted and served:
# on this machine (`make local`) or on Kubernetes (`make cluster deploy image pipeline`).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

# Knobs: override on the command line, e.g. make local DATASET=synthetic EPOCHS=2. Each is
# declared here once, with the `# knob:` line that `make help` prints; the scripts and jobs
# read it from the environment. An empty pipeline knob leaves the job's own default in force
# (python -m jobs.local --help; on Kubernetes, workflows/e2e.yaml's parameters).
# knob: the Python that creates the virtualenv (3.11 or 3.12)
PYTHON     ?= python3
# knob: the virtualenv
VENV       ?= .venv
# knob: datasets, runs, served models, the MLflow store (gitignored)
WORK_DIR   ?= .work
# knob: fashion_mnist, idx or synthetic (empty: make local fashion_mnist, make predict the served model's)
DATASET    ?=
# knob: epochs per candidate (empty: 5)
EPOCHS     ?=
# knob: worker processes (TFJob replicas) per candidate (empty: 2)
WORKERS    ?=
# knob: the candidates, comma-separated (empty: cnn,dropout,batchnorm)
MODELS     ?=
# knob: the smoke check's threshold on test accuracy through the server (empty: 0.8)
MIN_ACCURACY ?=
# knob: gate (promote only a candidate better than the served one beyond noise) or force (empty: gate)
PROMOTE    ?=
# knob: direct (one server) or canary (stable and canary servers; the canary step decides) for make local (empty: direct)
ROLLOUT    ?=
# knob: how long make local ROLLOUT=canary watches the canary, in seconds (empty: 20)
CANARY_SECONDS ?=
# knob: extra flags for every ingest command of make local
INGEST_ARGS ?=
# knob: extra flags for every train command of make local
TRAIN_ARGS ?=
# knob: the port of make serve and make predict
PORT       ?= 8501
# knob: the port of make monitor's Prometheus (its UI: alerts, targets, queries)
MONITOR_PORT ?= 9095
# knob: the port of make monitor's Grafana, where grafana-server is installed
GRAFANA_PORT ?= 3095
# knob: where make rollback acts: local (WORK_DIR, the server on PORT) or cluster (a workflow in NAMESPACE)
WHERE      ?= local
# knob: the version make rollback serves again (empty: the one served before the current one)
TO         ?=
# knob: why make rollback rolls back (required; recorded with it)
REASON     ?=
# knob: the k3d cluster's name
CLUSTER    ?= fmnist
# knob: the namespace of the app (as kustomize/overlays/local installs it)
NAMESPACE  ?= fmnist
# knob: the jobs image's repository
IMAGE_REPO ?= fmnist-jobs
# knob: kustomize components for make deploy, comma-separated (gpu, arm64-serving)
COMPONENTS ?=
# knob: nodes of the k3d cluster (3: three nodes sharing a host folder)
NODES      ?= 1
# knob: 1: build the GPU image (<image>-gpu)
GPU        ?= 0
# knob: 1: push the image to REGISTRY instead of importing it into k3d
PUSH       ?= 0
# knob: the registry make image PUSH=1 pushes to
REGISTRY   ?=
# knob: the overlay make deploy applies: local, local-nodes, cluster (empty: by NODES)
OVERLAY    ?=
# knob: the storage class of the shared volume (OVERLAY=cluster)
STORAGE_CLASS ?=
# Every knob, from the lines above; read by the jobs and scripts, not by make.
KNOBS := $(shell sed -n 's/^\([A-Z_]*\) *?=.*/\1/p' $(firstword $(MAKEFILE_LIST)))
export $(KNOBS)

# hack/venv.sh notes it when PYTHON asks for another interpreter than the existing venv has.
export PYTHON_ASKED := $(if $(filter command line environment%,$(origin PYTHON)),$(PYTHON))

# What each kind of command needs installed (hack/venv.sh): the pipeline, or also the dev tools.
JOBS_ENV := $(VENV)/.stamp-jobs
DEV_ENV  := $(VENV)/.stamp-dev

##@ General

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m [KNOB=value ...]\n"} \
	  /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)
	@printf '\n\033[1mKnobs\033[0m (make <target> KNOB=value; [the default])\n'
	@awk '/^# knob: / { what = substr($$0, 9); next } \
	  what != "" && match($$0, /^[A-Z_]+ *\?= */) { name = $$1; value = substr($$0, RLENGTH + 1); \
	    printf "  \033[36m%-14s\033[0m %s%s\n", name, what, (value == "" ? "" : " [" value "]") } \
	  { what = "" }' $(firstword $(MAKEFILE_LIST))

.PHONY: venv
venv: $(JOBS_ENV) ## Create or update .venv with what the pipeline needs (hashed locks)
	@hack/venv.sh note

.PHONY: venv-dev
venv-dev: $(DEV_ENV) ## Also install the test, lint and benchmark tools
	@hack/venv.sh note

$(JOBS_ENV): requirements/jobs.txt requirements/local.txt hack/venv.sh
	hack/venv.sh jobs

$(DEV_ENV): requirements/jobs.txt requirements/local.txt requirements/dev.txt requirements/checkov.txt hack/venv.sh
	hack/venv.sh dev

.PHONY: lock
lock: venv-dev ## Re-resolve requirements/*.in into the hashed lock files
	hack/lock.sh

##@ Local (one machine, no cluster)

.PHONY: local
local: venv ## Run the whole pipeline here: ingest, train, evaluate, promote, serve-check
	hack/local.sh

.PHONY: serve
serve: venv ## Serve the promoted model with TF Serving's REST API on PORT
	hack/serve.sh

.PHONY: predict
predict: venv ## Classify test samples through the server on PORT
	hack/predict.sh

.PHONY: rollback
rollback: venv ## Serve an earlier version again, deleting nothing: REASON="..." [TO=<version>] [WHERE=cluster]
	hack/rollback.sh

.PHONY: monitor
monitor: ## Prometheus with the alert rules on every local model server, on MONITOR_PORT (Grafana too, if installed)
	hack/monitor.sh

.PHONY: ui
ui: venv ## Open the MLflow UI on the local tracking store
	hack/mlflow-ui.sh

.PHONY: tensorboard
tensorboard: venv ## Open TensorBoard on every local run's training logs
	hack/tensorboard.sh

.PHONY: clean
clean: ## Delete the local work dir (datasets, runs, models, tracking store)
	rm -rf -- "$(WORK_DIR)"

##@ Tests and benchmarks

.PHONY: lint
lint: venv-dev ## Lint: ruff check and format check, shellcheck, yamllint (seconds)
	hack/lint.sh

.PHONY: fmt
fmt: venv-dev ## Format the Python and fix what ruff can
	hack/lint.sh fix

.PHONY: test
test: venv-dev ## Lint, then run every test (offline; about 18 minutes on 2 cores)
	hack/prometheus.sh ensure
	hack/lint.sh
	hack/test.sh -n auto --dist loadfile --no-loadscope-reorder

.PHONY: test-fast
test-fast: venv-dev ## Run the tests not marked slow
	hack/prometheus.sh ensure
	hack/test.sh -n auto --dist loadfile --no-loadscope-reorder -m "not slow"

.PHONY: generate
generate: venv-dev ## Write the files derived from monitoring/: the SLO rules, the PrometheusRule, the dashboards
	hack/generate.sh

.PHONY: bench
bench: venv-dev ## Measure training, input, serving and end-to-end speed (python -m bench)
	hack/bench.sh

.PHONY: bench-docs
bench-docs: venv-dev ## Put the latest full results/bench-*.json into docs/benchmarks.md's table
	hack/bench.sh docs

##@ Kubernetes (needs docker, k3d, kubectl, argo)

.PHONY: cluster
cluster: ## Create (or reuse) the k3d cluster from infra/k3d.yaml (NODES=3: three nodes sharing a host folder)
	hack/cluster.sh up

.PHONY: down
down: ## Delete the k3d cluster
	hack/cluster.sh down

.PHONY: image
image: ## Build the jobs image with an immutable tag and import it into k3d (GPU=1; PUSH=1 REGISTRY=...)
	hack/image.sh

.PHONY: deploy
deploy: ## Apply the add-ons and the app (an overlay: local, local-nodes, cluster) and wait until ready
	hack/deploy.sh

.PHONY: pipeline
pipeline: ## Submit workflows/e2e.yaml with the current image and watch it
	hack/pipeline.sh

.PHONY: status
status: ## One screen: local runs and served model; with a cluster, its components and workflows
	hack/status.sh

.PHONY: cluster-ui
cluster-ui: ## Port-forward the Argo UI, the MLflow UI and serving, and print the URLs
	hack/cluster-ui.sh

.PHONY: smoke
smoke: venv-dev ## Serving contract tests and jobs.predict --check against the cluster
	hack/smoke.sh
