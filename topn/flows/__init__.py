"""The topn flow and the `topn` command.

Importing this package turns Prefect telemetry off for everything it starts (docs/local-stack.md: Prefect
telemetry), unless the user chose otherwise; it must happen before Prefect is imported.
"""

import os

for _name, _value in (
    ("DO_NOT_TRACK", "1"),
    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    ("PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT", "false"),
    # Without PREFECT_API_URL each run starts a temporary server: slow machines need more than 20 s.
    ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"),
    # A flow run sends a heartbeat every 30 s (Prefect's minimum): a run whose process died is then marked
    # Crashed by the automation in flows/crashes.py instead of staying Running forever.
    ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30"),
):
    os.environ.setdefault(_name, _value)
