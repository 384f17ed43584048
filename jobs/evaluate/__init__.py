"""The evaluate stage: every candidate scored through the SavedModel that would be served.

evaluate  the step: `python -m jobs.evaluate` (validation and test scores, which test images
          each candidate gets right)
report    plots and report.md
"""
