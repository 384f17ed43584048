# Fashion-MNIST, trained by several workers, tracked, promoted and served:
# on this machine (`make local`) or on Kubernetes (`make cluster deploy image pipeline`).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

# Knobs: override on the command line, e.g. make local DATASET=synthetic EPOCHS=2
PYTHON     ?= python3
VENV       ?= .venv
WORK_DIR   ?= .work
# Empty: make local uses fashion_mnist, make predict the dataset the served model was trained on.
DATASET    ?=
EPOCHS     ?= 5
WORKERS    ?= 2
MODELS     ?= cnn,dropout,batchnorm
INGEST_ARGS ?=
TRAIN_ARGS ?=
# gate: promote only a candidate better than the served one beyond noise; force: promote anyway.
PROMOTE    ?= gate
PORT       ?= 8501
CLUSTER    ?= fmnist
NAMESPACE  ?= fmnist
IMAGE_REPO ?= fmnist-jobs
MIN_ACCURACY ?= 0.8
COMPONENTS ?=
# Read by the jobs and scripts, not by make.
export PYTHON VENV WORK_DIR DATASET EPOCHS WORKERS MODELS INGEST_ARGS TRAIN_ARGS PROMOTE PORT CLUSTER NAMESPACE IMAGE_REPO MIN_ACCURACY COMPONENTS
# Cluster knobs: nodes of the k3d cluster, the GPU image, pushing to a registry, the overlay.
NODES      ?= 1
GPU        ?= 0
PUSH       ?= 0
REGISTRY   ?=
OVERLAY    ?=
STORAGE_CLASS ?=
export NODES GPU PUSH REGISTRY OVERLAY STORAGE_CLASS

# hack/venv.sh notes it when PYTHON asks for another interpreter than the existing venv has.
export PYTHON_ASKED := $(if $(filter command line environment%,$(origin PYTHON)),$(PYTHON))

# What each kind of command needs installed (hack/venv.sh): the pipeline, or also the dev tools.
JOBS_ENV := $(VENV)/.stamp-jobs
DEV_ENV  := $(VENV)/.stamp-dev

##@ General

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m [KNOB=value ...]  knobs: PYTHON VENV WORK_DIR DATASET EPOCHS WORKERS MODELS INGEST_ARGS TRAIN_ARGS PROMOTE PORT CLUSTER NAMESPACE IMAGE_REPO MIN_ACCURACY COMPONENTS NODES GPU PUSH REGISTRY OVERLAY STORAGE_CLASS\n"} \
	  /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

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

.PHONY: test
test: venv-dev ## Run every test (offline; about 13 minutes on 2 cores)
	hack/test.sh

.PHONY: test-fast
test-fast: venv-dev ## Run the tests not marked slow
	hack/test.sh -m "not slow"

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
