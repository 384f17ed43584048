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
PORT       ?= 8501
CLUSTER    ?= fmnist
NAMESPACE  ?= fmnist
IMAGE_REPO ?= fmnist-jobs
MIN_ACCURACY ?= 0.8
COMPONENTS ?=
# Read by the jobs and scripts, not by make.
export PYTHON VENV WORK_DIR DATASET EPOCHS WORKERS MODELS INGEST_ARGS TRAIN_ARGS PORT CLUSTER NAMESPACE IMAGE_REPO MIN_ACCURACY COMPONENTS

STAMP := $(VENV)/.stamp
LOCKS := requirements/jobs.txt requirements/dev.txt requirements/checkov.txt

##@ General

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m [KNOB=value ...]  knobs: PYTHON VENV WORK_DIR DATASET EPOCHS WORKERS MODELS INGEST_ARGS TRAIN_ARGS PORT CLUSTER NAMESPACE IMAGE_REPO MIN_ACCURACY COMPONENTS\n"} \
	  /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

.PHONY: venv
venv: $(STAMP) ## Create or update the virtualenvs from the pinned lock files

$(STAMP): $(LOCKS) hack/venv.sh
	hack/venv.sh

.PHONY: lock
lock: venv ## Re-resolve requirements/*.in into the pinned lock files
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
test: venv ## Run every test (offline; about 13 minutes on 2 cores)
	hack/test.sh

.PHONY: test-fast
test-fast: venv ## Run the tests not marked slow
	hack/test.sh -m "not slow"

.PHONY: bench
bench: venv ## Measure training, input, serving and end-to-end speed
	hack/bench.sh

##@ Kubernetes (needs docker, k3d, kubectl, argo)

.PHONY: cluster
cluster: ## Create (or reuse) the k3d cluster from infra/k3d.yaml
	hack/cluster.sh up

.PHONY: down
down: ## Delete the k3d cluster
	hack/cluster.sh down

.PHONY: image
image: ## Build the jobs image with an immutable tag and import it into k3d
	hack/image.sh

.PHONY: deploy
deploy: ## Apply the add-ons and the app (kustomize/overlays/local) and wait until ready
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
smoke: venv ## Serving contract tests and jobs.predict --check against the cluster
	hack/smoke.sh
