"""The Prefect deployment topn/default: `python -m topn.deployments.serve`, or prefect.yaml with a work pool."""
