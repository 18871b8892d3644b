"""What the router reads from an X.509 certificate, with the standard library alone.

Enrolment and renewal need a certificate's subject CN, its validity, its public key and
its fingerprint, the portal's certificate its DNS names (subjectAltName); a small DER
reader gives them all, so reading a certificate costs no crypto library (agent.keys does
the signing and the signature checks). Signatures are not checked here.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

SEQUENCE, SET, OID, UTC_TIME, GENERALIZED_TIME = 0x30, 0x31, 0x06, 0x17, 0x18
VERSION_TAG = 0xA0  # [0] EXPLICIT, before the serial number when present
EXTENSIONS_TAG, OCTET_STRING, DNS_NAME_TAG = 0xA3, 0x04, 0x82  # [3] EXPLICIT; [2] IMPLICIT
COMMON_NAME_OID = bytes.fromhex("550403")  # 2.5.4.3
SUBJECT_ALT_NAME_OID = bytes.fromhex("551d11")  # 2.5.29.17
_STRINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}
_PEM = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(?P<body>[A-Za-z0-9+/=\s]*?)\s*-----END CERTIFICATE-----"
)


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """One certificate as the router needs it: its DER, subject CNs, validity and key."""

    der: bytes
    common_names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    public_key_der: bytes  # SubjectPublicKeyInfo, DER
    dns_names: tuple[str, ...] = ()  # the subjectAltName's DNS names

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER, lower-case hex: what the cloud stores for the router."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def pem(self) -> str:
        """The certificate as one clean PEM block."""
        return ssl.DER_cert_to_PEM_cert(self.der)


def _element(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `at`; ValueError if cut."""
    if at + 2 > len(data):
        raise ValueError("DER: truncated element")
    tag, length = data[at], data[at + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("DER: multi-byte tags are not used in certificates")
    start = at + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise ValueError("DER: bad length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("DER: an element runs past its end")
    return tag, start, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """Each (tag, element start, content start, content end) inside data[start:end]."""
    found = []
    at = start
    while at < end:
        tag, content, stop = _element(data, at)
        if stop > end:
            raise ValueError("DER: an element runs past its parent")
        found.append((tag, at, content, stop))
        at = stop
    return found


def _time(tag: int, text: bytes) -> datetime:
    formats = {UTC_TIME: "%y%m%d%H%M%SZ", GENERALIZED_TIME: "%Y%m%d%H%M%SZ"}
    if tag not in formats:
        raise ValueError(f"DER: tag {tag:#x} is not a time")
    return datetime.strptime(text.decode("ascii"), formats[tag]).replace(tzinfo=UTC)


def _common_names(data: bytes, start: int, end: int) -> tuple[str, ...]:
    names = []
    for set_tag, _, set_start, set_end in _children(data, start, end):
        for attribute_tag, _, a_start, a_end in _children(data, set_start, set_end):
            if set_tag != SET or attribute_tag != SEQUENCE:
                raise ValueError("DER: a name is not a sequence of sets")
            parts = _children(data, a_start, a_end)
            if len(parts) != 2 or parts[0][0] != OID:
                raise ValueError("DER: a name attribute is not (type, value)")
            if data[parts[0][2] : parts[0][3]] == COMMON_NAME_OID:
                tag, _, v_start, v_end = parts[1]
                if tag not in _STRINGS:
                    raise ValueError(f"DER: a CN of string type {tag:#x}")
                names.append(data[v_start:v_end].decode(_STRINGS[tag]))
    return tuple(names)


def _dns_names(data: bytes, fields: list[tuple[int, int, int, int]]) -> tuple[str, ...]:
    """The DNS names of the subjectAltName among the optional fields after the key."""
    for tag, _, start, end in fields:
        if tag != EXTENSIONS_TAG:
            continue
        wrapped = _children(data, start, end)
        if len(wrapped) != 1 or wrapped[0][0] != SEQUENCE:
            raise ValueError("DER: the extensions are not one sequence")
        for _, _, e_start, e_end in _children(data, wrapped[0][2], wrapped[0][3]):
            parts = _children(data, e_start, e_end)
            if not parts or parts[0][0] != OID:
                raise ValueError("DER: an extension without its type")
            if data[parts[0][2] : parts[0][3]] != SUBJECT_ALT_NAME_OID:
                continue
            value = parts[-1]
            if value[0] != OCTET_STRING:
                raise ValueError("DER: subjectAltName's value is not an octet string")
            _, names_start, names_end = _element(data, value[2])
            return tuple(
                data[n_start:n_end].decode("ascii")
                for n_tag, _, n_start, n_end in _children(data, names_start, names_end)
                if n_tag == DNS_NAME_TAG
            )
    return ()


def read_certificate_der(der: bytes) -> CertificateFacts:
    """The facts of one DER certificate; ValueError when it is not one."""
    tag, start, end = _element(der, 0)
    if tag != SEQUENCE or end != len(der):
        raise ValueError("not a DER certificate")
    outer = _children(der, start, end)
    if len(outer) != 3 or outer[0][0] != SEQUENCE:
        raise ValueError("not a DER certificate: no to-be-signed part")
    fields = _children(der, outer[0][2], outer[0][3])
    if fields and fields[0][0] == VERSION_TAG:
        fields = fields[1:]
    if len(fields) < 6:
        raise ValueError("not a DER certificate: too few fields")
    validity, subject, key = fields[3], fields[4], fields[5]
    if validity[0] != SEQUENCE or subject[0] != SEQUENCE or key[0] != SEQUENCE:
        raise ValueError("not a DER certificate: validity, subject or key is malformed")
    times = _children(der, validity[2], validity[3])
    if len(times) != 2:
        raise ValueError("not a DER certificate: validity needs two times")
    (b_tag, _, b_start, b_end), (a_tag, _, a_start, a_end) = times
    try:
        not_before = _time(b_tag, der[b_start:b_end])
        not_after = _time(a_tag, der[a_start:a_end])
        names = _common_names(der, subject[2], subject[3])
        dns_names = _dns_names(der, fields[6:])
    except UnicodeDecodeError as error:
        raise ValueError(f"not a DER certificate: {error}") from None
    return CertificateFacts(der, names, not_before, not_after, der[key[1] : key[3]], dns_names)


def certificate_der(pem: str | bytes) -> bytes:
    """The DER of the first certificate in `pem`; ValueError when there is none."""
    data = pem.encode() if isinstance(pem, str) else pem
    block = _PEM.search(data)
    if block is None:
        raise ValueError("no PEM certificate (-----BEGIN CERTIFICATE-----) found")
    try:
        return binascii.a2b_base64(b"".join(block["body"].split()), strict_mode=True)
    except binascii.Error as error:
        raise ValueError(f"the PEM certificate is not base64: {error}") from None


def read_certificate(pem: str | bytes) -> CertificateFacts:
    """The facts of the first certificate in `pem`; ValueError when there is none."""
    return read_certificate_der(certificate_der(pem))
