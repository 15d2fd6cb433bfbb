"""The runtime: what a compute device needs (precision, faults), memory, threads, local workers.
Imports nothing of harness but harness.errors and itself."""
