"""The model server's client: the serving checks of the pipeline and `make predict`.

client   TF Serving's REST API from the client's side (stdlib only), waiting for a version
predict  the step and command: `python -m jobs.predict` (classify, wait, --check)
"""
