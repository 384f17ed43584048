"""The release stage: which model is served, and every change of it.
One concern per module:

    promote         the step: the gate, a new served version, the registry (`python -m jobs.promote`)
    selection       choosing a candidate and the gate: McNemar's exact test (pure functions)
    canary          the step: watch a canary, then promote it or roll it back (`python -m jobs.canary`)
    canary_metrics  the canary's figures: the servers' Prometheus pages (TF Serving's series), the decision
    quality         what the canary predicts against stable: agreement, class shift, McNemar accuracy
    rollback        an earlier version served again as the next one (`python -m jobs.rollback`)
    history         the served history: each version's origin, what a rollback goes back to
    state           the release state: publishing a version, the canary in progress, the aliases
    registry        MLflow's registry brought into line with what is served (every release job's end)
"""
