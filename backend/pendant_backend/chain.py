"""Pure: the hash chain of audit events. No I/O.

Each event's `hash` is SHA-256 over the previous event's hash and the event's canonical JSON body, so
changing any stored body, or removing or reordering an event, breaks every link after it. The first
event links to GENESIS. Personal data (positions, notes) never enters a body: an event carries a digest of
such data, so erasing the data on request leaves the chain intact and still proves what was there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


def canonical(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 characters kept as they are."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of `value`: how an event commits to data it does not hold."""
    return hashlib.sha256(canonical(value).encode()).hexdigest()


def link_hash(prev_hash: str, body: str) -> str:
    """The hash of an event whose canonical body is `body`, following an event whose hash is `prev_hash`."""
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def event_body(
    *,
    seq: int,
    at: str,
    kind: str,
    actor: str,
    device_id: str | None,
    alarm_pk: int | None,
    data: Mapping[str, Any],
) -> str:
    """The canonical body of one event."""
    return canonical(
        {
            "seq": seq,
            "at": at,
            "kind": kind,
            "actor": actor,
            "device_id": device_id,
            "alarm_pk": alarm_pk,
            "data": dict(data),
        }
    )


@dataclass(frozen=True)
class Link:
    """One stored event as the verifier sees it."""

    seq: int
    body: str
    prev_hash: str
    hash: str
    # The columns stored beside the body, which must agree with it.
    columns: Mapping[str, Any]


@dataclass(frozen=True)
class Problem:
    """Something the verifier found wrong, at event `seq`."""

    seq: int
    what: str

    def __str__(self) -> str:
        return f"event {self.seq}: {self.what}"


def verify_links(links: Iterable[Link], *, start_prev: str = GENESIS, start_seq: int = 1) -> list[Problem]:
    """Check a run of consecutive events: numbering, each link to the one before, each hash over its
    body, and the columns against the body. An empty list means the run is intact."""
    problems: list[Problem] = []
    prev_hash, expected_seq = start_prev, start_seq
    for link in links:
        if link.seq != expected_seq:
            problems.append(Problem(link.seq, f"expected event {expected_seq} here: events are missing"))
        if link.prev_hash != prev_hash:
            problems.append(
                Problem(link.seq, "does not link to the event before it (one was removed or edited)")
            )
        if link_hash(link.prev_hash, link.body) != link.hash:
            problems.append(Problem(link.seq, "its content does not match its hash (it was edited)"))
        try:
            body = json.loads(link.body)
        except ValueError:
            problems.append(Problem(link.seq, "its body is not JSON"))
            body = {}
        if body.get("seq") != link.seq:
            problems.append(Problem(link.seq, "its number differs from the number in its body"))
        for key, value in link.columns.items():
            if body.get(key) != value:
                problems.append(Problem(link.seq, f"its column {key} differs from its body"))
        prev_hash, expected_seq = link.hash, link.seq + 1
    return problems
