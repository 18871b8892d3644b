"""Receipts: which of a router's events the cloud committed or refused, as exact seq ranges.

Pure, like the rest of ingest's core (cloud.ingest_core re-exports these names).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from agent import wire

RECEIPT_MAX_RANGES = wire.MAX_BATCH  # a router decodes no longer list; more go in more receipts
RECEIPT_REASON_MAX = wire.MAX_TEXT  # a router decodes no longer text

Origin = tuple[str, str, int]  # router_id, boot_id, seq: what makes an event unique
Refusal = tuple[Origin, str]  # an event dead-lettered, and why


def runs(numbers: Iterable[int]) -> list[tuple[int, int]]:
    """The numbers as sorted, contiguous, inclusive (first, last) runs; repeats count once."""
    found: list[tuple[int, int]] = []
    for number in sorted(set(numbers)):
        if found and number == found[-1][1] + 1:
            found[-1] = (found[-1][0], number)
        else:
            found.append((number, number))
    return found


def _seq_ranges(origins: Iterable[Origin]) -> list[tuple[str, list[wire.SeqRange]]]:
    """Per router (sorted), its seqs as ranges per boot."""
    seqs: defaultdict[str, defaultdict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for router_id, boot_id, seq in origins:
        seqs[router_id][boot_id].append(seq)
    return [
        (
            router_id,
            [
                wire.SeqRange(boot_id=boot_id, first=first, last=last)
                for boot_id, numbers in sorted(boots.items())
                for first, last in runs(numbers)
            ],
        )
        for router_id, boots in sorted(seqs.items())
    ]


def _chunks(ranges: list[wire.SeqRange]) -> list[tuple[wire.SeqRange, ...]]:
    return [
        tuple(ranges[start : start + RECEIPT_MAX_RANGES])
        for start in range(0, len(ranges), RECEIPT_MAX_RANGES)
    ]


def receipts(stored: Iterable[Origin], refused: Iterable[Refusal] = ()) -> list[wire.Receipt]:
    """Receipts for committed events: one per router, its seqs as ranges per boot; then
    receipts for dead-lettered events: one per router and reason, in `refused`.

    Exactly the events given, never "everything up to": a gap stays a gap, so the router
    keeps and sends again what is missing. A router with more than RECEIPT_MAX_RANGES
    ranges gets several receipts.
    """
    made = [
        wire.Receipt(router_id=router_id, ranges=chunk)
        for router_id, ranges in _seq_ranges(stored)
        for chunk in _chunks(ranges)
    ]
    by_reason: defaultdict[str, list[Origin]] = defaultdict(list)
    for origin, reason in refused:
        by_reason[reason[:RECEIPT_REASON_MAX]].append(origin)
    made += [
        wire.Receipt(router_id=router_id, refused=chunk, reason=reason)
        for reason, origins in sorted(by_reason.items())
        for router_id, ranges in _seq_ranges(origins)
        for chunk in _chunks(ranges)
    ]
    return made
