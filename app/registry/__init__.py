"""The model registry (versions, jobs, files) and the training jobs that add to it."""
