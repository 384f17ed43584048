"""MLflow, best effort: what every stage records, and the local store.
One concern per module:

    tracker         runs, datasets, metrics, plots, logged models, the registry; retries and the parent run
    classifier      the logged model's code: a pyfunc PythonModel over the SavedModel (imports no jobs module)
    system_metrics  MLflow's system metrics monitor for each training worker
    __main__        `python -m jobs.tracking`: create the local store in a work dir
"""
