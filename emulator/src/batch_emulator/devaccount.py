"""The well-known development account, documented like Azurite's devstoreaccount1.

Anyone can read this key: it only opens an emulator bound to loopback.
"""

DEV_ACCOUNT_NAME = "devbatchaccount1"
DEV_ACCOUNT_KEY = "ZGV2YmF0Y2hhY2NvdW50MS1sb2NhbC1lbXVsYXRvci1rZXktbm90LWEtc2VjcmV0IQ=="
