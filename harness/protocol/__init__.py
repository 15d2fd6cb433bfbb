"""The protocol: the paper's facts, the grids, job specs, tasks, data and the few-shot splits.
Imports nothing of harness but harness.errors: no training, store, runtime or noise."""
