"""Training: one job from its spec to its result (fine-tuning, loss, forward passes, evaluation,
batching, models, checkpoints, artifacts). Never imports the store: a job never touches the database."""
