"""The evaluate stage: every candidate scored through the SavedModel that would be served.
One concern per module:

    evaluate  the step: validation and test scores, and which test images each candidate gets
              right (what promote compares with the served version)
    report    plots and report.md
    __main__  `python -m jobs.evaluate`
"""
