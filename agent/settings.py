"""The agent's one typed settings object. `agent.config` reads it from UCI."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

LANGUAGES = ("en", "zh")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the agent needs to run, validated. Durations in seconds, sizes in bytes."""

    # agent
    lan_interfaces: tuple[str, ...] = ("br-lan",)
    portal_address: IPv4Address = IPv4Address("192.168.1.1")  # noqa: RUF009 - immutable
    portal_port: int = 2050
    # The trusted captive API over HTTPS, served once the cloud has pushed a certificate.
    portal_https_port: int = 8443
    state_dir: Path = Path("/tmp/loopspot")
    flash_dir: Path = Path("/etc/loopspot")
    snapshot_interval: int = 300
    control_socket: Path = Path("/var/run/loopspot.sock")
    nft_backend: str = "auto"  # auto (= netlink) | netlink | libnftables | nft
    counter_poll_interval: float = 2.0
    # session
    session_timeout: int = 3600  # 0 = no limit
    idle_timeout: int = 900  # 0 = no limit
    data_quota: int = 0  # bytes per session, 0 = no limit
    # portal
    template: str = "default"
    templates_dir: Path | None = None  # None = the portal_templates/ shipped with the agent
    language: str = "auto"  # auto | en | zh
    terms_version: str = "1"
    site_name: str = "Loopspot"
    rate_limit: float = 10.0  # requests per second per client
    rate_burst: int = 20
    # walled garden: reachable before a client is authorized
    walled_garden_domains: tuple[str, ...] = ()
    walled_garden_addresses: tuple[IPv4Network, ...] = field(default_factory=tuple)
    # cloud: the MQTT link; off until enrolled (or configured by hand)
    cloud_enabled: bool = False
    cloud_router_id: str = ""  # "" = from credentials_dir/identity.json
    cloud_broker_host: str = ""  # "" = from credentials_dir/identity.json
    cloud_broker_port: int = 0  # 0 = identity.json's, else 8883 with TLS and 1883 without
    cloud_tls: bool = True
    cloud_credentials_dir: Path = Path("/etc/loopspot/credentials")
    cloud_ca_file: Path | None = None  # None = credentials_dir/ca.crt
    cloud_cert_file: Path | None = None  # None = credentials_dir/router.crt
    cloud_key_file: Path | None = None  # None = credentials_dir/router.key
    cloud_username: str = ""
    cloud_password_file: Path | None = None
    cloud_alliance_key_file: Path | None = None  # None = identity.json's alliance_key
    cloud_keepalive: int = 60
    cloud_status_interval: int = 300
    spool_max_events: int = 10000
    spool_flush_interval: int = 300
    # presence: who is in the shop, for visits and dwell time (reported only with the cloud)
    presence_dhcp_leases: Path = Path("/tmp/dhcp.leases")
    presence_interval: int = 15
    presence_left_after: int = 300

    @property
    def portal_url(self) -> str:
        """Where redirected clients are sent."""
        return f"http://{self.portal_address}:{self.portal_port}/portal"
