"""The ingest stage: the dataset, written once and read by every later stage.
One concern per module:

    data      sources (tensorflow-datasets, idx files, synthetic), the stored format and its
              manifest, the validation split, the models' input pipelines
    garments  the synthetic source's images: garments drawn from seeded parameters, its version
              (a package: its modules in its own __init__)
    ingest    the step: its settings; the stored dataset replaced only when they change
    __main__  `python -m jobs.ingest`
"""
