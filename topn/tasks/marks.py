"""The metadata topn writes on the Batch resources it creates: how it knows its own later (it replaces or
deletes only those) and tells the user which leftovers are its."""

OWNER_KEY, OWNER = "created-by", "topn"  # on pools topn created
LEGACY_VERSION_KEY = "topn-taskapp"  # how pools were marked before they carried OWNER_KEY
FLOW_RUN_KEY = "prefect-flow-run"  # on jobs: the flow run that made it
INPUTS_KEY = "topn-inputs"  # on jobs: the key of what the job works on (its plan's root)
