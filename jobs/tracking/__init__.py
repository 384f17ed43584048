"""MLflow, best effort: what every stage records, and the local store.
One concern per module:

    tracker       runs, datasets, metrics, logged models, the registry; retries and the parent run
    mlflow_model  a SavedModel as an MLflow model (signature, input example)
    __main__      `python -m jobs.tracking`: create the local store in a work dir
"""
