"""DNS providers for ACME's dns-01: publish and withdraw the `_acme-challenge` TXT record.

`acme_dns` names one:
- `rfc2136://SERVER[:PORT]/ZONE`: a dynamic update (RFC 2136) signed with TSIG (RFC 8945),
  as BIND, Knot, PowerDNS and most DNS hosts take it; the key is the BIND-style file
  `acme_dns_tsig_file` names (`tsig-keygen` writes one);
- `challtestsrv+http://HOST:PORT`: pebble-challtestsrv's management API, for the lab.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Protocol

from cloud.errors import CloudConfigError, CloudError

CHALLTESTSRV = "challtestsrv+"
RFC2136 = "rfc2136://"
CHALLENGE_TTL = 60  # seconds: a challenge record lives minutes, resolvers must not keep it
_TSIG_KEY = re.compile(
    r'key\s+"?(?P<name>[A-Za-z0-9._-]+)"?\s*\{\s*algorithm\s+"?(?P<algorithm>[a-z0-9-]+)"?\s*;'
    r'\s*secret\s+"(?P<secret>[A-Za-z0-9+/=]+)"\s*;\s*\}\s*;',
)


class PortalCertError(CloudError):
    """The CA or the DNS provider refused or failed; nothing was pushed. Names the step."""


class TxtPublisher(Protocol):
    """A DNS provider seam: publish and withdraw one TXT record (the challenge)."""

    def publish(self, fqdn: str, value: str) -> None:
        """Make `fqdn` answer TXT `value`; PortalCertError if the provider refused."""

    def withdraw(self, fqdn: str) -> None:
        """Remove the TXT record of `fqdn` again."""


class ChallTestSrv:
    """pebble-challtestsrv's management API: a DNS server whose records are set over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _post(self, path: str, body: dict[str, str]) -> None:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                answer.read()
        except (urllib.error.URLError, OSError) as error:
            raise PortalCertError(f"DNS provider {self.url}{path}: {error}") from None

    def publish(self, fqdn: str, value: str) -> None:
        """Set the TXT record."""
        self._post("/set-txt", {"host": fqdn, "value": value})

    def withdraw(self, fqdn: str) -> None:
        """Clear the TXT record."""
        self._post("/clear-txt", {"host": fqdn})


class TsigKey:
    """A TSIG key as a BIND `key "name" { algorithm ...; secret "..."; };` block gives it."""

    def __init__(self, name: str, algorithm: str, secret: str) -> None:
        self.name, self.algorithm, self.secret = name, algorithm, secret

    @classmethod
    def parse(cls, text: str, source: str = "acme_dns_tsig_file") -> TsigKey:
        """The first key block in `text`; CloudConfigError naming `source` otherwise."""
        found = _TSIG_KEY.search(text)
        if found is None:
            raise CloudConfigError(
                f'{source}: no \'key "NAME" {{ algorithm ...; secret "..."; }};\' block; '
                "make one with `tsig-keygen -a hmac-sha256 NAME`"
            )
        return cls(found["name"], found["algorithm"], found["secret"])


class Rfc2136:
    """Dynamic DNS updates of one zone on its primary server, signed with a TSIG key."""

    def __init__(self, server: str, port: int, zone: str, key: TsigKey) -> None:
        self.server, self.port, self.zone, self.key = server, port, zone.rstrip(".") + ".", key

    def _send(self, fqdn: str, value: str | None) -> None:
        import dns.exception
        import dns.name
        import dns.query
        import dns.rcode
        import dns.tsig
        import dns.tsigkeyring
        import dns.update

        zone, name = dns.name.from_text(self.zone), dns.name.from_text(fqdn)
        if not name.is_subdomain(zone):
            raise PortalCertError(f"{fqdn} is not in the zone {self.zone} that acme_dns updates")
        keyring = dns.tsigkeyring.from_text({self.key.name: (self.key.algorithm, self.key.secret)})
        update = dns.update.UpdateMessage(
            zone,
            keyring=keyring,
            keyname=dns.name.from_text(self.key.name),
            keyalgorithm=self.key.algorithm,
        )
        relative = name.relativize(zone)
        if value is None:
            update.delete(relative, "TXT")
        else:
            update.replace(relative, CHALLENGE_TTL, "TXT", json.dumps(value))
        where = f"DNS update of {fqdn} at {self.server}:{self.port}"
        try:
            answer = dns.query.tcp(update, self.server, port=self.port, timeout=10)
        except (dns.exception.DNSException, OSError) as error:
            raise PortalCertError(f"{where}: {error}") from None
        if answer.rcode() != dns.rcode.NOERROR:
            refused = dns.rcode.to_text(answer.rcode())
            raise PortalCertError(f"{where}: refused ({refused}); check the key and zone policy")

    def publish(self, fqdn: str, value: str) -> None:
        """Replace the TXT records of `fqdn` with `value`."""
        self._send(fqdn, value)

    def withdraw(self, fqdn: str) -> None:
        """Delete the TXT records of `fqdn`."""
        self._send(fqdn, None)


def _rfc2136(spec: str, tsig_file: str) -> Rfc2136:
    parts = urllib.parse.urlsplit(spec)
    zone = parts.path.strip("/")
    if not parts.hostname or not zone:
        raise CloudConfigError(
            f"acme_dns: {spec!r} needs a server and a zone: {RFC2136}SERVER/ZONE"
        )
    if not tsig_file:
        raise CloudConfigError(
            "acme_dns_tsig_file: an RFC 2136 update needs a TSIG key; "
            "set LOOPSPOT_ACME_DNS_TSIG_FILE"
        )
    try:
        text = Path(tsig_file).read_text()
    except OSError as error:
        raise CloudConfigError(f"acme_dns_tsig_file: {tsig_file}: {error.strerror}") from None
    return Rfc2136(parts.hostname, parts.port or 53, zone, TsigKey.parse(text))


def txt_publisher(spec: str, tsig_file: str = "") -> TxtPublisher:
    """The DNS provider `acme_dns` names; CloudConfigError with the fix otherwise."""
    if spec.startswith(RFC2136):
        return _rfc2136(spec, tsig_file)
    if spec.startswith(CHALLTESTSRV) and spec[len(CHALLTESTSRV) :].startswith("http"):
        return ChallTestSrv(spec[len(CHALLTESTSRV) :])
    raise CloudConfigError(
        f"acme_dns: {spec!r} names no DNS provider; set LOOPSPOT_ACME_DNS to "
        f"{RFC2136}SERVER/ZONE (with LOOPSPOT_ACME_DNS_TSIG_FILE) or "
        f"{CHALLTESTSRV}http://HOST:PORT (pebble-challtestsrv)"
    )
