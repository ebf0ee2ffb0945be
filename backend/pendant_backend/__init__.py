"""Device-management backend: broker accounts, MQTT ingest, storage."""
