"""The repository itself: its documented commands, knobs, layout, generated files and benchmark harness."""
