"""The hash chain, as pure functions: an edited, removed or reordered event is found."""

from __future__ import annotations

import dataclasses

from pendant_backend import chain


def build(count: int) -> list[chain.Link]:
    links, prev = [], chain.GENESIS
    for seq in range(1, count + 1):
        body = chain.event_body(
            seq=seq,
            at=f"2026-01-01T00:00:0{seq}+00:00",
            kind="alarm_received",
            actor="system",
            device_id="pd-0001",
            alarm_pk=seq,
            data={"content": chain.digest({"n": seq})},
        )
        digest = chain.link_hash(prev, body)
        links.append(
            chain.Link(seq=seq, body=body, prev_hash=prev, hash=digest, columns={"kind": "alarm_received"})
        )
        prev = digest
    return links


def test_an_intact_chain_has_no_problems() -> None:
    assert chain.verify_links(build(5)) == []
    assert chain.verify_links([]) == []


def test_canonical_json_is_independent_of_key_order() -> None:
    assert chain.canonical({"b": 1, "a": "é"}) == chain.canonical({"a": "é", "b": 1}) == '{"a":"é","b":1}'
    assert chain.digest({"b": 1, "a": 2}) == chain.digest({"a": 2, "b": 1})


def test_an_edited_body_is_found() -> None:
    links = build(5)
    links[2] = dataclasses.replace(links[2], body=links[2].body.replace("alarm_received", "alarm_resolved"))
    problems = chain.verify_links(links)
    assert {p.seq for p in problems} == {3} and any("edited" in p.what for p in problems)


def test_an_edited_body_with_a_recomputed_hash_breaks_the_next_link() -> None:
    links = build(5)
    body = links[2].body.replace("pd-0001", "pd-0002")
    links[2] = dataclasses.replace(links[2], body=body, hash=chain.link_hash(links[2].prev_hash, body))
    assert [p.seq for p in chain.verify_links(links)] == [4]


def test_a_removed_event_is_found() -> None:
    links = build(5)
    del links[1]
    problems = chain.verify_links(links)
    assert problems and problems[0].seq == 3
    assert any("missing" in p.what for p in problems) and any("link" in p.what for p in problems)


def test_reordered_events_are_found() -> None:
    links = build(4)
    links[1], links[2] = links[2], links[1]
    assert chain.verify_links(links) != []


def test_a_column_that_disagrees_with_its_body_is_found() -> None:
    links = build(3)
    links[0] = dataclasses.replace(links[0], columns={"kind": "alarm_resolved"})
    assert [str(p) for p in chain.verify_links(links)] == ["event 1: its column kind differs from its body"]


def test_a_chain_can_be_checked_from_the_middle() -> None:
    links = build(6)
    assert chain.verify_links(links[3:], start_prev=links[2].hash, start_seq=4) == []
