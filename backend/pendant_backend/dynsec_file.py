"""The broker's dynamic-security API, answered from the plugin's file while the broker is stopped.

Mosquitto 2.0's dynamic-security plugin writes its whole file after every command that changes an
account, so provisioning through the running broker costs in proportion to the accounts it holds
already: 10,000 devices took over 14 minutes that way (docs/performance.md). `DynsecFile` answers the
same control messages as the plugin (the commands provisioning and revoking send: getClient, getRole,
createClient, createRole, deleteClient, deleteRole) with the same responses and the same file format,
and writes the file once per control message. The broker reads the file when it starts.

It works only while the broker is stopped, and keeps it stopped: `open_dynsec_file` takes the lock
that `Broker.start` takes (`accounts_lock`), then checks that no broker of the data folder is running;
a broker started meanwhile would read the file before the change and write its own copy over it later.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pendant_backend.broker import (
    Broker,
    BrokerError,
    accounts_lock,
    dynsec_password_fields,
    running_broker_pid,
)
from pendant_backend.settings import Settings, read_private_json, write_private_json


class DynsecFileError(BrokerError):
    """The file cannot be edited now (the broker runs, or it does not exist yet)."""


@contextmanager
def open_dynsec_file(settings: Settings) -> Iterator[DynsecFile]:
    """The file, for as long as the block runs, with the broker kept from starting."""
    with accounts_lock(settings, holder="offline provisioning"):
        pid = running_broker_pid(settings)
        if pid is not None:
            raise DynsecFileError(
                f"the broker of {settings.data_dir} is running (pid {pid}): stop it to provision with "
                "--offline, or provision without --offline through the running broker"
            )
        yield DynsecFile(Broker(settings).dynsec_path)


class DynsecFile:
    """The plugin's file as a dynamic-security session: `call()` takes a control message and returns
    the plugin's response to it (pendant_backend.accounts.dynsec_call sends through it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise DynsecFileError(
                f"{path} does not exist: start the broker once (`pendant broker run`) to create its accounts"
            )
        self._document: dict[str, Any] = read_private_json(path)
        self._clients = {c["username"]: c for c in self._document.setdefault("clients", [])}
        self._roles = {r["rolename"]: r for r in self._document.setdefault("roles", [])}
        self.writes = 0

    def call(self, payload: bytes, is_response: Callable[[bytes], bool]) -> bytes:
        """Apply every command of the control message, write the file once if any changed it, and
        return the response. There is no one else's answer to skip here, so `is_response` (which picks
        the caller's answer among the broker's messages) is not needed."""
        commands = json.loads(payload)["commands"]
        changed = False
        responses = []
        for command in commands:
            response, changes = self._apply(command)
            changed |= changes
            if "correlationData" in command:
                response["correlationData"] = command["correlationData"]
            responses.append(response)
        if changed:
            self._save()
        return json.dumps({"responses": responses}).encode()

    def _apply(self, command: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """One command: (the plugin's response without its correlation data, whether it changed the file)."""
        name = command.get("command")
        done: dict[str, Any] = {"command": name}
        if name == "getClient":
            client = self._clients.get(command.get("username"))
            if client is None:
                return {**done, "error": "Client not found"}, False
            shown = {k: client[k] for k in ("username", "clientid", "textname", "roles") if k in client}
            return {**done, "data": {"client": {**shown, "groups": []}}}, False
        if name == "getRole":
            role = self._roles.get(command.get("rolename"))
            if role is None:
                return {**done, "error": "Role not found"}, False
            return {**done, "data": {"role": role}}, False
        if name == "createRole":
            rolename = command.get("rolename")
            if not isinstance(rolename, str) or not rolename:
                return {**done, "error": "Invalid/missing rolename"}, False
            if rolename in self._roles:
                return {**done, "error": "Role already exists"}, False
            acls = [
                {
                    "acltype": acl["acltype"],
                    "topic": acl["topic"],
                    "priority": acl.get("priority", 0),
                    "allow": acl.get("allow", False),
                }
                for acl in command.get("acls", [])
            ]
            self._roles[rolename] = {"rolename": rolename, "acls": acls}
            return done, True
        if name == "createClient":
            return self._create_client(command, done)
        if name == "deleteClient":
            if self._clients.pop(command.get("username"), None) is None:
                return {**done, "error": "Client not found"}, False
            return done, True
        if name == "deleteRole":
            rolename = command.get("rolename")
            if self._roles.pop(rolename, None) is None:
                return {**done, "error": "Role not found"}, False
            for client in self._clients.values():  # as the plugin does: no client keeps a deleted role
                client["roles"] = [r for r in client.get("roles", []) if r.get("rolename") != rolename]
            return done, True
        return {**done, "error": "Unknown command"}, False

    def _create_client(self, command: dict[str, Any], done: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        username = command.get("username")
        if not isinstance(username, str) or not username:
            return {**done, "error": "Invalid/missing username"}, False
        if username in self._clients:
            return {**done, "error": "Client already exists"}, False
        roles = [{"rolename": r["rolename"]} for r in command.get("roles", [])]
        if any(r["rolename"] not in self._roles for r in roles):
            return {**done, "error": "Role not found"}, False
        client: dict[str, Any] = {"username": username}
        for key in ("clientid", "textname"):
            if isinstance(command.get(key), str):
                client[key] = command[key]
        client["roles"] = roles
        if isinstance(command.get("password"), str):
            client.update(dynsec_password_fields(command["password"]))
        self._clients[username] = client
        return done, True

    def _save(self) -> None:
        """Write the whole file atomically (0600), keeping its owner (the broker's user)."""
        owner = self.path.stat()
        self._document["clients"] = list(self._clients.values())
        self._document["roles"] = list(self._roles.values())
        write_private_json(self.path, self._document)
        if (owner.st_uid, owner.st_gid) != (os.getuid(), os.getgid()):
            os.chown(self.path, owner.st_uid, owner.st_gid)
        self.writes += 1
