"""The Prefect deployment topn/default: `python -m deployments.serve`, or prefect.yaml with a work pool."""
