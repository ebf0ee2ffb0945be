"""Helpers for the JSON API's tests: the web application without its console, and a person with an
API token. Imported by name (`from api_support import ...`), like backend_samples."""

from __future__ import annotations

from pendant_backend import tokens

from support import add_account


def bearer(engine, username: str, *roles: str) -> dict[str, str]:  # noqa: ANN001
    """An account `username` holding `roles`, and the Authorization header of a new token of it."""
    add_account(engine, username, *roles)
    return {"Authorization": f"Bearer {tokens.create_token(engine, username=username)}"}
