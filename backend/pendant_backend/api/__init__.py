"""The JSON HTTP API (`/api/v1`): routers per resource (`routes/`), their shared dependencies
(`deps.py`) and typed response models (`schemas.py`). pendant_backend.web serves it beside the console."""
