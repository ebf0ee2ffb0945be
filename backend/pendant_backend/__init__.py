"""Device-management backend: broker accounts, MQTT ingest, storage."""


class BackendError(Exception):
    """An error whose message is one sentence meant for the user: what went wrong and what to do."""
