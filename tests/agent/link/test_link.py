"""The link's answers to the cloud, played as messages in, Acks out: no broker, no sleeping."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from agent.link.identity import Identity
from agent.link.link import Link
from agent.link.mqtt import Incoming
from agent.link.runtime import CloudLink
from agent.link.spool_db import SpoolDB
from agent.link.spooler import Spooler
from agent.settings import Settings
from agent.wire import (
    Ack,
    Channel,
    Command,
    CommandAction,
    Event,
    EventBatch,
    EventKind,
    Receipt,
    RouterConfig,
    RouterState,
    SeqRange,
    Topic,
    decode,
)

ROUTER = "shop-1"


@dataclass
class FakeRouter:
    """Records what the link asked; `refuse` makes apply_config fail."""

    applied: list[int] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    reloads: int = 0
    spent: list[str] = field(default_factory=list)
    refuse: str = ""
    version: int = 0

    @property
    def config_version(self) -> int:
        return self.version

    def clients(self) -> int:
        return 3

    async def apply_config(self, config: RouterConfig) -> str:
        if self.refuse:
            return self.refuse
        self.applied.append(config.version)
        self.version = config.version
        return ""

    async def revoke_device(self, device_id: str) -> str:
        self.revoked.append(device_id)
        return ""

    async def reload_config(self) -> str:
        self.reloads += 1
        return ""

    async def coupons_spent(self, coupon_ids: tuple[str, ...]) -> str:
        self.spent.extend(coupon_ids)
        return ""


def make_link(router: FakeRouter) -> Link:
    def no_db() -> SpoolDB:
        raise AssertionError("the spool is not opened in these tests")

    identity = Identity(ROUTER, "broker.example", 8883, b"k" * 16, None)
    return Link(identity, Spooler(no_db), router, keepalive=60, status_interval=300)


def message(
    channel: Channel, payload: bytes | RouterConfig | Command | Receipt, router: str = ROUTER
) -> Incoming:
    data = payload if isinstance(payload, bytes) else payload.encode()
    return Incoming(str(Topic(router, channel)), data, retained=False)


async def test_a_newer_config_is_applied_and_acked_with_its_version() -> None:
    router = FakeRouter()
    ack = await make_link(router).answer(message(Channel.CONFIG, RouterConfig(version=4)))
    assert ack == Ack(ROUTER, "config", "4", True, "", ack.at if ack else 0.0)
    assert router.applied == [4]


async def test_the_same_config_again_is_acked_but_not_applied_and_an_older_one_ignored() -> None:
    router = FakeRouter(version=4)
    link = make_link(router)
    again = await link.answer(message(Channel.CONFIG, RouterConfig(version=4)))
    assert again is not None and again.ok
    assert await link.answer(message(Channel.CONFIG, RouterConfig(version=3))) is None
    assert router.applied == []


async def test_a_refused_config_is_acked_with_the_reason() -> None:
    router = FakeRouter(refuse="site_name: too long")
    ack = await make_link(router).answer(message(Channel.CONFIG, RouterConfig(version=9)))
    assert ack is not None and not ack.ok and ack.error == "site_name: too long"


async def test_a_config_that_is_not_json_is_refused_with_the_field_at_fault() -> None:
    ack = await make_link(FakeRouter()).answer(
        message(Channel.CONFIG, b'{"v":1,"type":"config","version":"x"}')
    )
    assert ack is not None and not ack.ok and "version" in ack.error


async def test_each_allowed_command_runs_once_and_is_acked_by_its_id() -> None:
    router = FakeRouter()
    link = make_link(router)
    revoke = Command(id="c1", action=CommandAction.REVOKE_DEVICE, device_id="ab" * 16)
    first = await link.answer(message(Channel.COMMAND, revoke))
    again = await link.answer(message(Channel.COMMAND, revoke))  # a QoS 1 redelivery
    assert first == again and first is not None and first.ok and first.ref == "cmd"
    assert router.revoked == ["ab" * 16]
    reload = await link.answer(
        message(Channel.COMMAND, Command(id="c2", action=CommandAction.RELOAD_CONFIG))
    )
    status = await link.answer(
        message(Channel.COMMAND, Command(id="c3", action=CommandAction.SEND_STATUS))
    )
    assert reload is not None and reload.ok and router.reloads == 1
    assert status is not None and status.ok


async def test_an_action_outside_the_allow_list_is_refused() -> None:
    shell = b'{"v":1,"type":"command","id":"c9","action":"shell"}'
    ack = await make_link(FakeRouter()).answer(message(Channel.COMMAND, shell))
    assert ack is not None and (ack.id, ack.ok, ack.error) == ("c9", False, "unknown action")


async def test_messages_for_other_routers_or_cleared_retained_ones_are_ignored() -> None:
    link = make_link(FakeRouter())
    assert (
        await link.answer(message(Channel.CONFIG, RouterConfig(version=1), router="shop-2")) is None
    )
    assert await link.answer(Incoming(str(Topic(ROUTER, Channel.CONFIG)), b"", True)) is None


def test_the_status_says_who_and_how_the_router_is() -> None:
    status = make_link(FakeRouter(version=7)).status(RouterState.ONLINE)
    assert (status.router_id, status.state, status.clients, status.config_version) == (
        ROUTER, RouterState.ONLINE, 3, 7,
    )  # fmt: skip
    assert status.agent_version


async def test_a_receipt_from_the_cloud_deletes_the_events_it_names_and_nothing_else(
    tmp_path: Path,
) -> None:
    spooler = Spooler(partial(SpoolDB, tmp_path / "tmpfs", tmp_path / "flash", ROUTER, 100, 300))
    await spooler.open()
    try:
        identity = Identity(ROUTER, "broker.example", 8883, b"k" * 16, None)
        link = Link(identity, spooler, FakeRouter(), keepalive=60, status_interval=300)
        spooler.db.append([Event(router_id=ROUTER, kind=EventKind.PORTAL_VIEWED)] * 5)
        taken = await spooler.take()
        assert taken is not None
        await spooler.acked(taken[0].number)
        assert (spooler.stats.depth, spooler.stats.unconfirmed) == (
            5,
            5,
        )  # the PUBACK is not enough
        boot = decode(taken[1], EventBatch).events[0].boot_id
        stored = Receipt(ROUTER, (SeqRange(boot, 1, 2), SeqRange(boot, 5, 5)))
        assert await link.answer(message(Channel.RECEIPT, stored)) is None
        assert spooler.stats.depth == 2
        others = Receipt("shop-2", (SeqRange(boot, 1, 5),))
        assert await link.answer(message(Channel.RECEIPT, others, router="shop-2")) is None
        assert spooler.stats.depth == 2
        refused = Receipt(ROUTER, refused=(SeqRange(boot, 3, 3),), reason="events[0].reason: long")
        assert await link.answer(message(Channel.RECEIPT, refused)) is None
        assert (spooler.stats.depth, spooler.stats.refused) == (1, 1)
        shown = CloudLink(Settings(), identity, spooler).status()  # `loopspot-agent status`
        assert shown["spool_refused"] == 1 and shown["spool_depth"] == 1
        assert "spool_refused" not in link.status(RouterState.ONLINE).to_json()  # not on the wire
    finally:
        await spooler.close()
