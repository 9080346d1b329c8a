"""`topn deploy`: registers topn/default on a Prefect work pool, its entrypoint the installed module
`topn.flows.topn.topn`, so that workers with topn installed run it: no checkout, no pull step, no image."""

from __future__ import annotations

from topn.deployments import default


def deploy(
    work_pool: str,
    name: str = default.NAME,
    cron: str = default.CRON,
    batch_credentials: str | None = None,
    storage_credentials: str | None = None,
) -> str:
    """Creates or updates topn/<name> (topn/default) on `work_pool`; returns its id."""
    from topn.flows.topn import topn  # first: topn.flows turns telemetry off before Prefect loads

    from prefect.deployments.runner import EntrypointType  # isort: skip

    deployment_id = topn.deploy(
        name=name,
        work_pool_name=work_pool,
        cron=cron,
        parameters=default.parameters(batch_credentials, storage_credentials),
        tags=default.TAGS,
        description=default.DESCRIPTION,
        entrypoint_type=EntrypointType.MODULE_PATH,
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,  # Prefect suggests .serve() for process pools: this is the installed path
    )
    return str(deployment_id)
