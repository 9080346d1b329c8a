"""topn-taskapp: the word counter that runs on Azure Batch nodes (standard library only)."""

__version__ = "0.1.0"
