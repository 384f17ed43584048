# Fashion-MNIST, trained by several workers, tracked, promoted and served:
# on this machine (`make local`) or on Kubernetes (`make cluster deploy image pipeline`).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

# Knobs: override on the command line, e.g. make local DATASET=synthetic EPOCHS=2. Each is
# declared here once, with the `# knob:` line that `make help` prints; the scripts and jobs
# read it from the environment, and read no other. A knob left empty here has its default in
# one owner: the job's flag it becomes (python -m jobs.local --help; the workflow's parameters
# are generated from the same parsers) or the one script that reads it. make help shows each
# default beside its owner (hack/knobs.tsv, written by make generate).

# -- the pipeline: hack/local.sh passes each one set as a flag of python -m jobs.local
# knob: datasets, runs, served models, the MLflow store (gitignored)
WORK_DIR   ?= .work
# knob: fashion_mnist, idx or synthetic (make predict: by default the served model's)
DATASET    ?=
# knob: epochs per candidate
EPOCHS     ?=
# knob: stop a candidate after this many epochs without a better validation accuracy (0: never)
PATIENCE   ?=
# knob: worker processes (TFJob replicas) per candidate
WORKERS    ?=
# knob: the candidates, comma-separated
MODELS     ?=
# knob: the smoke check's threshold on test accuracy through the server
MIN_ACCURACY ?=
# knob: gate (promote only a candidate better than the served one beyond noise) or force
PROMOTE    ?=
# knob: direct (one server) or canary (stable and canary servers; the canary step decides)
ROLLOUT    ?=
# knob: how long ROLLOUT=canary watches the canary, in seconds
CANARY_SECONDS ?=
# knob: extra flags for every ingest command of make local
INGEST_ARGS ?=
# knob: extra flags for every train command of make local
TRAIN_ARGS ?=
# knob: extra flags for the canary step of make local, e.g. its bounds (python -m jobs.canary --help)
CANARY_ARGS ?=
LOCAL_KNOBS := WORK_DIR DATASET EPOCHS PATIENCE WORKERS MODELS MIN_ACCURACY PROMOTE ROLLOUT CANARY_SECONDS INGEST_ARGS TRAIN_ARGS CANARY_ARGS

# -- serving, predicting, looking
# knob: the port of make serve, make predict and make rollback's server
PORT       ?= 8501
# knob: the address make serve listens on
SERVE_HOST ?= 127.0.0.1
# knob: more flags for make serve (python -m jobs.serve --help)
SERVE_ARGS ?=
# knob: the server make predict and make rollback talk to (empty: the local one on PORT)
PREDICT_URL ?=
# knob: how long make predict waits for the local server to serve the stable version (the newest but during a canary), in seconds
PREDICT_WAIT ?= 60
# knob: how many test images make predict classifies
SAMPLES    ?= 10
# knob: image files make predict classifies instead, space-separated
IMAGES     ?=
# knob: the port of make ui (the MLflow UI)
MLFLOW_PORT ?= 5000
# knob: the port of make tensorboard
TENSORBOARD_PORT ?= 6006
# knob: the port of make mlflow-serve (MLflow's own scoring server on the champion)
MLFLOW_SERVE_PORT ?= 5002
# knob: how make mlflow-serve gets the model's environment: local (.venv) or virtualenv (its own pins; minutes)
ENV_MANAGER ?= local
# knob: how long make mlflow-serve-check waits for the server to answer, in seconds
MLFLOW_SERVE_READY_SECONDS ?= 1800
# knob: what make status shows: auto, local or cluster
STATUS     ?= auto
# knob: the port of make monitor's Prometheus (its UI: alerts, targets, queries)
MONITOR_PORT ?= 9095
# knob: the port of make monitor's Grafana, where grafana-server is installed
GRAFANA_PORT ?= 3095
# knob: how long make monitor waits for Prometheus (and Grafana) to answer, in seconds
MONITOR_READY_SECONDS ?= 60

# -- rollback
# knob: where make rollback acts: local (WORK_DIR, the server on PORT) or cluster (a workflow in NAMESPACE)
WHERE      ?= local
# knob: the version make rollback serves again (empty: the one served before the current one)
TO         ?=
# knob: why make rollback rolls back (required; recorded with it)
REASON     ?=
# knob: how long make rollback WHERE=cluster follows its workflow, in seconds
ROLLBACK_TIMEOUT ?= 900

# -- Kubernetes
# knob: the k3d cluster's name
CLUSTER    ?= fmnist
# knob: the namespace of the app (as kustomize/overlays/local installs it)
NAMESPACE  ?= fmnist
# knob: the jobs image's repository
IMAGE_REPO ?= fmnist-jobs
# knob: the jobs image make pipeline, smoke and rollback run (empty: the one make image built for this tree)
IMAGE      ?=
# knob: kustomize components for make deploy, comma-separated (gpu, arm64-serving)
COMPONENTS ?=
# knob: nodes of the k3d cluster (3: three nodes sharing a host folder)
NODES      ?= 1
# knob: the host folder the nodes of make cluster NODES=3 share (empty: one under WORK_DIR)
SHARED_DIR ?=
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
# knob: how long each wait for the cluster's components lasts (whole seconds, e.g. 300s)
WAIT_TIMEOUT ?= 300s
# knob: how long make pipeline follows the workflow, in seconds
PIPELINE_TIMEOUT ?= 7200
# knob: how long make smoke follows its workflow, in seconds
SMOKE_TIMEOUT ?= 600
# knob: the cluster's TF Serving as make smoke and make cluster-ui reach it (k3d's port mapping)
CLUSTER_SERVING_URL ?= http://127.0.0.1:8511
# knob: the port make cluster-ui forwards the Argo UI to
ARGO_PORT  ?= 2746
# knob: the port make cluster-ui forwards the cluster's MLflow UI to (not MLFLOW_PORT: both may run)
CLUSTER_MLFLOW_PORT ?= 5001

# -- tools and benchmarks
# knob: the Python that creates the virtualenv (3.11 or 3.12)
PYTHON     ?= python3
# knob: the virtualenv
VENV       ?= .venv
# knob: the policy scanner's virtualenv (its pins clash with the jobs')
CHECKOV_VENV ?= .venv-checkov
# knob: where make bench writes its results (gitignored)
RESULTS    ?= results
# knob: more flags for make bench, e.g. --quick
BENCH_ARGS ?=

# Every knob, from the lines above; read by the jobs and scripts, not by make.
KNOBS := $(shell sed -n 's/^\([A-Z_]*\) *?=.*/\1/p' $(firstword $(MAKEFILE_LIST)))
export $(KNOBS) LOCAL_KNOBS

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
	@printf '\n\033[1mKnobs\033[0m (make <target> KNOB=value; [the default, from its owner in hack/knobs.tsv])\n'
	@awk -F '\t' 'FNR == NR { if ($$0 !~ /^#/) default[$$1] = $$2; next } \
	  /^# knob: / { what = substr($$0, 9); next } \
	  what != "" && match($$0, /^[A-Z_]+ *\?=/) { name = $$0; sub(/ *\?=.*/, "", name); \
	    printf "  \033[36m%-20s\033[0m %s%s\n", name, what, (default[name] == "" ? "" : " [" default[name] "]") } \
	  { what = "" }' hack/knobs.tsv $(firstword $(MAKEFILE_LIST))

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
predict: venv ## Classify test samples, or your own images (IMAGES="a.png b.jpg"), through the server on PORT
	hack/predict.sh

.PHONY: rollback
rollback: venv ## Serve an earlier version again, deleting nothing: REASON="..." [TO=<version>] [WHERE=cluster]
	hack/rollback.sh

.PHONY: canary-end
canary-end: venv ## End a canary left open (a failed or killed run), from any state: roll it back
	hack/canary-end.sh

.PHONY: monitor
monitor: ## Prometheus with the alert rules on every local model server, on MONITOR_PORT (Grafana too, if installed)
	hack/monitor.sh

.PHONY: ui
ui: venv ## Open the MLflow UI on the local tracking store
	hack/mlflow-ui.sh

.PHONY: mlflow-serve
mlflow-serve: venv ## Serve the champion with MLflow's own `mlflow models serve` on MLFLOW_SERVE_PORT
	hack/mlflow-serve.sh

.PHONY: mlflow-serve-check
mlflow-serve-check: venv ## Opt-in, not in make test: mlflow models serve on the champion answers sample images (ENV_MANAGER=virtualenv: minutes)
	hack/mlflow-serve.sh check

.PHONY: tensorboard
tensorboard: venv ## Open TensorBoard on every local run's training logs
	hack/tensorboard.sh

.PHONY: clean
clean: ## Delete the local work dir (datasets, runs, models, tracking store)
	rm -rf -- "$(WORK_DIR)"

##@ Tests and benchmarks

.PHONY: lint
lint: venv-dev ## Lint: ruff check and format check, import contracts, shellcheck, yamllint (seconds)
	hack/lint.sh

.PHONY: fmt
fmt: venv-dev ## Format the Python and fix what ruff can
	hack/lint.sh fix

.PHONY: generate
generate: venv-dev ## Write the derived files: the workflow's steps and defaults, the knob table, the module map, the test count, the alert rules and dashboards
	hack/generate.sh

.PHONY: verify
verify: venv-dev ## Check that the derived files are up to date and hack/ reads only declared knobs (seconds)
	hack/generate.sh verify

.PHONY: test
test: venv-dev ## Lint and verify, then run every test (offline; about 20 minutes on 2 idle cores)
	hack/prometheus.sh ensure
	hack/lint.sh
	hack/generate.sh verify
	hack/test.sh -n auto --dist loadfile --no-loadscope-reorder

.PHONY: test-fast
test-fast: venv-dev ## Run the tests not marked slow
	hack/prometheus.sh ensure
	hack/test.sh -n auto --dist loadfile --no-loadscope-reorder -m "not slow"

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
