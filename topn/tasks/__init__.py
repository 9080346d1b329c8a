"""Prefect tasks wrapping each Azure step of a Batch workload: reusable by any flow."""
