"""The steps run for real, as the pipeline runs them: training, tracking, promotion, rollback, canary, the runner."""
