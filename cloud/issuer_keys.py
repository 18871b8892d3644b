"""Routers' coupon-issuing keys: certified by the alliance's root key, a newer one replacing.

Runs inside the ingest batch's transaction when a router's status carries a key the cloud
has not certified yet; the router then gets its plan, which carries the certificate.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, insert, select, update

from agent.coupons.token import certify
from cloud.coupon_ingest import Place
from cloud.coupon_store import ISSUER_KEYS, cloud_backend, root_seed

CERTIFICATE_DAYS = 365  # how long a router's issuing key is certified for


def certify_keys(
    connection: Connection, keys: dict[str, str], where: dict[str, Place], now: datetime
) -> set[str]:
    """Certify each router's new issuing key (replacing its old one); the routers certified."""
    i = ISSUER_KEYS.c
    done: set[str] = set()
    if not keys:
        return done
    current = dict(
        connection.execute(
            select(i.router_id, i.public_key).where(
                i.router_id.in_(sorted(keys)), i.replaced_at.is_(None)
            )
        ).all()
    )
    ed = cloud_backend()
    for router_id, public_hex in sorted(keys.items()):
        place = where.get(router_id)
        if place is None or place.alliance_id is None or current.get(router_id) == public_hex:
            continue
        connection.execute(
            update(ISSUER_KEYS)
            .where(i.router_id == router_id, i.replaced_at.is_(None))
            .values(replaced_at=now)
        )
        not_after = int((now + timedelta(days=CERTIFICATE_DAYS)).timestamp())
        key_id = connection.execute(
            insert(ISSUER_KEYS)
            .values(
                router_id=router_id,
                public_key=public_hex,
                certificate="",
                not_after=not_after,
                certified_at=now,
            )
            .returning(i.key_id)
        ).scalar_one()
        certificate = certify(
            ed,
            root_seed(connection, place.alliance_id),
            key_id,
            place.alliance_id,
            not_after,
            bytes.fromhex(public_hex),
        )
        connection.execute(
            update(ISSUER_KEYS).where(i.key_id == key_id).values(certificate=certificate.to_text())
        )
        done.add(router_id)
    return done
