"""Faults the pipeline survives: real processes killed, frozen or unplugged (docs/reliability.md)."""
