"""A local Azure Batch service that the official SDKs talk to as they talk to Azure."""

from batch_emulator.devaccount import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME

__all__ = ["DEV_ACCOUNT_KEY", "DEV_ACCOUNT_NAME"]
