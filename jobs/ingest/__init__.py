"""The ingest stage: the dataset, written once and read by every later stage.

data    sources (tensorflow-datasets, idx files, synthetic), the stored format and its
        manifest, the validation split, the models' input pipelines
ingest  the step: `python -m jobs.ingest`
"""
