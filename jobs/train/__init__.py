"""The train stage: one candidate trained on the workers that TF_CONFIG names.
One concern per module:

    train        the step: its typed settings, the run, tracking, the export
    loop         the custom training loop: steps per call, metrics per epoch, backup and resume
    recipe       the learning rate per step, the best validation epoch kept, early stopping
    progress     the record of training: history.json, per-epoch metrics
    distributed  TF_CONFIG, MultiWorkerMirroredStrategy, exit statuses
    models       the three candidate models
    export       the SavedModel and its two signatures
    run_info     a candidate's run.json: its MLflow ids, restarts, attempts
    __main__     `python -m jobs.train`
"""
