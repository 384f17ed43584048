"""The model server's client: the serving checks of the pipeline and `make predict`.
One concern per module:

    client    TF Serving's REST API from the client's side (stdlib only), waiting for a version
    predict   the step and command: classify, wait for a version, --check
    __main__  `python -m jobs.predict`
"""
