"""topn: Azure Batch workloads as Prefect flows.

`topn.tasks` holds the generic Batch and Storage steps (one Prefect task per Azure call) and the credential
blocks; `topn.flows` the workloads (the word count `topn.flows.topn:topn`, `topn.flows.batch_map:batch_map`)
and the `topn` command; `topn.deployments` the deployment `topn/default`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("topn")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
