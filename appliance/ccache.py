"""Kerberos credential cache (ccache) inspection, checking and renewal.

One module shared by the credential bridge (``appliance.credd_bridge``) and the
Kerberos credmon (``appliance.credmon``).  It answers, for a FILE ccache held in
memory: whose is it (default principal), which ticket-granting ticket (TGT) is in
it, with which flags and times, and when it should be renewed; it renews a TGT at
the KDC and gives back a new FILE ccache image.

Choice of library
-----------------
* Inspection is done by a small, strict parser of the FILE ccache format
  (version 4, the format MIT and Heimdal write by default; documented in MIT's
  ``doc/formats/ccache_file_format.rst``).  The bridge reads a file that a user
  owns, so the bytes are untrusted until checked: the parser bounds every length
  by the data actually present, caps counts, and runs before any C library sees
  the data.  It needs no libkrb5 and no temporary file, and it reads exactly the
  bytes that were checked (no second open of the path).
* Renewal needs the KDC, and for that we use the PyPI ``krb5`` package
  (pykrb5, MIT libkrb5 bindings, maintained, wheels/sdist build against
  ``libkrb5-dev``): ``unmarshal_credentials`` turns the TGT's bytes into a
  ``krb5_creds``, ``get_renewed_creds`` renews it through a MEMORY ccache, and
  ``marshal_credentials`` gives back the FILE-format entry.  Nothing is written
  to disk.  ``marshal``/``unmarshal`` need MIT krb5 >= 1.20 (Debian 12: 1.20.1,
  trixie: 1.21).
* python ``gssapi`` was not chosen: it exposes a credential's principal and
  remaining lifetime but not the ticket flags (renewable, invalid) nor
  renew-till, and cannot renew a TGT explicitly.

Reading files safely (no symlink, one link, owner, mode, size) is :mod:`appliance.privfile`'s
job; :func:`read_ccache` combines it with the parser. The renewal policy (when to renew, backoff)
is :mod:`appliance.renewal`.

Security notes: nothing here logs or puts ticket or key material into an
exception message or a ``repr``; the raw entries are kept in fields excluded from
``repr``.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import struct
from typing import Iterable, Optional

from .privfile import MAX_SIZE, Refusal, read_private

__all__ = [
    "MAX_CCACHE_SIZE",
    "CCacheError",
    "CredentialRefused",
    "RenewError",
    "TicketFlags",
    "Principal",
    "Credential",
    "CCache",
    "parse",
    "serialize",
    "read_ccache",
    "check_tgt",
    "renew",
]

#: Largest ccache file accepted (a TGT plus a few service tickets is a few KiB).
MAX_CCACHE_SIZE = MAX_SIZE

FCC_VERSION_4 = 0x0504
_HEADER_TAG_KDC_OFFSET = 1
_CONF_REALM = "X-CACHECONF:"
_MAX_COMPONENTS = 32
_MAX_LIST = 1024


# ---------------------------------------------------------------------------
# errors


class CCacheError(ValueError):
    """The data is not a FILE ccache this module can read (malformed/unsupported)."""

    code = "malformed"


class CredentialRefused(Refusal):  # Refusal: appliance.privfile
    """The ccache's content is not acceptable (principal, no TGT, not renewable, expired)."""


class RenewError(Exception):
    """Renewal at the KDC failed (KDC unreachable, ticket no longer renewable, ...)."""


# ---------------------------------------------------------------------------
# data model


class TicketFlags(enum.IntFlag):
    """Ticket flags as stored in a FILE ccache (MIT ``TKT_FLG_*`` values, RFC 4120 bit 0 = MSB)."""

    NONE = 0
    FORWARDABLE = 0x40000000
    FORWARDED = 0x20000000
    PROXIABLE = 0x10000000
    PROXY = 0x08000000
    MAY_POSTDATE = 0x04000000
    POSTDATED = 0x02000000
    INVALID = 0x01000000
    RENEWABLE = 0x00800000
    INITIAL = 0x00400000
    PRE_AUTH = 0x00200000
    HW_AUTH = 0x00100000
    TRANSIT_POLICY_CHECKED = 0x00080000
    OK_AS_DELEGATE = 0x00040000
    ENC_PA_REP = 0x00010000
    ANONYMOUS = 0x00008000

    def letters(self) -> str:
        """The flags as ``klist -f`` prints them (e.g. ``FRIA``)."""
        order = [
            (TicketFlags.FORWARDABLE, "F"),
            (TicketFlags.FORWARDED, "f"),
            (TicketFlags.PROXIABLE, "P"),
            (TicketFlags.PROXY, "p"),
            (TicketFlags.MAY_POSTDATE, "D"),
            (TicketFlags.POSTDATED, "d"),
            (TicketFlags.INVALID, "i"),
            (TicketFlags.RENEWABLE, "R"),
            (TicketFlags.INITIAL, "I"),
            (TicketFlags.HW_AUTH, "H"),
            (TicketFlags.PRE_AUTH, "A"),
            (TicketFlags.TRANSIT_POLICY_CHECKED, "T"),
            (TicketFlags.OK_AS_DELEGATE, "O"),
            (TicketFlags.ANONYMOUS, "a"),
        ]
        return "".join(ch for flag, ch in order if self & flag)


def _escape(text: str, specials: str) -> str:
    out = []
    for ch in text:
        if ch == "\\" or ch in specials:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\0":
            out.append("\\0")
        else:
            out.append(ch)
    return "".join(out)


@dataclasses.dataclass(frozen=True)
class Principal:
    """A Kerberos principal as stored in a ccache."""

    realm: str
    components: tuple[str, ...]
    name_type: int = 1  # KRB5_NT_PRINCIPAL

    def __str__(self) -> str:
        # Same quoting as krb5_unparse_name: '/' and '@' inside a component and
        # '@' inside the realm are escaped, so "a/b@R" != "a\/b@R".
        name = "/".join(_escape(c, "/@") for c in self.components)
        return f"{name}@{_escape(self.realm, '@')}"

    @property
    def is_config(self) -> bool:
        return self.realm == _CONF_REALM

    def is_tgs_for(self, realm: str) -> bool:
        return self.realm == realm and self.components == ("krbtgt", realm)


@dataclasses.dataclass(frozen=True)
class Credential:
    """One ccache entry (times are seconds since the epoch, KDC clock)."""

    client: Principal
    server: Principal
    authtime: int
    starttime: int
    endtime: int
    renew_till: int
    flags: TicketFlags
    is_skey: bool
    #: The entry exactly as stored (FILE format v4): ticket and session key
    #: are inside, so it is never shown.
    raw: bytes = dataclasses.field(repr=False, compare=False)

    @property
    def start(self) -> int:
        return self.starttime or self.authtime

    @property
    def is_config(self) -> bool:
        return self.server.is_config

    @property
    def is_tgt(self) -> bool:
        return self.server.is_tgs_for(self.client.realm)

    @property
    def renewable(self) -> bool:
        return bool(self.flags & TicketFlags.RENEWABLE) and self.renew_till > 0

    def can_extend(self) -> bool:
        """True if a renewal would move ``endtime`` later."""
        return self.renewable and self.renew_till > self.endtime

    def summary(self) -> dict:
        """Public facts (no ticket/key material), for state and logs."""
        return {
            "client": str(self.client),
            "server": str(self.server),
            "starttime": self.start,
            "endtime": self.endtime,
            "renew_till": self.renew_till if self.renewable else None,
            "flags": self.flags.letters(),
        }


@dataclasses.dataclass(frozen=True)
class CCache:
    """A parsed FILE ccache."""

    version: int
    principal: Principal
    #: Real credentials, in file order (configuration entries left out).
    credentials: tuple[Credential, ...]
    #: Number of configuration entries (``X-CACHECONF:``) that were skipped.
    config_entries: int = 0
    kdc_offset: tuple[int, int] = (0, 0)

    @property
    def tgt(self) -> Optional[Credential]:
        """The TGT of the default principal for its own realm (latest endtime wins)."""
        best = None
        for cred in self.credentials:
            if cred.client == self.principal and cred.is_tgt:
                if best is None or cred.endtime > best.endtime:
                    best = cred
        return best

    def minimal(self) -> bytes:
        """A new ccache image holding only the default principal and its TGT.

        This is what the bridge hands to the credd: no service tickets or
        configuration entries of the user's session travel further.
        """
        tgt = self.tgt
        if tgt is None:
            raise CCacheError("no TGT for the default principal")
        return serialize(self.principal, [tgt.raw])


# ---------------------------------------------------------------------------
# parsing


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.remaining():
            raise CCacheError("truncated ccache")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def i32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def counted(self) -> bytes:
        return self.take(self.u32())

    def text(self) -> str:
        raw = self.counted()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CCacheError("principal is not valid UTF-8") from None

    def principal(self) -> Principal:
        name_type = self.u32()
        count = self.u32()
        if count > _MAX_COMPONENTS:
            raise CCacheError("too many principal components")
        realm = self.text()
        comps = tuple(self.text() for _ in range(count))
        return Principal(realm=realm, components=comps, name_type=name_type)

    def skip_list(self) -> None:
        n = self.u32()
        if n > _MAX_LIST:
            raise CCacheError("address/authdata list too long")
        for _ in range(n):
            self.u16()
            self.counted()


def parse(data: bytes) -> CCache:
    """Parse a FILE ccache image (version 4).  Raises :class:`CCacheError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("ccache data must be bytes")
    if len(data) > MAX_CCACHE_SIZE:
        raise CCacheError("ccache too large")
    data = bytes(data)
    r = _Reader(data)
    version = r.u16()
    if version != FCC_VERSION_4:
        raise CCacheError(f"unsupported ccache version 0x{version:04x} (need 0x0504)")
    header = _Reader(r.take(r.u16()))
    kdc_offset = (0, 0)
    while header.remaining():
        tag = header.u16()
        value = _Reader(header.take(header.u16()))
        if tag == _HEADER_TAG_KDC_OFFSET and value.remaining() == 8:
            kdc_offset = (value.i32(), value.i32())
    principal = r.principal()
    creds: list[Credential] = []
    config = 0
    while r.remaining():
        start = r.pos
        client = r.principal()
        server = r.principal()
        r.u16()  # enctype of the session key
        r.counted()  # session key
        authtime, starttime, endtime, renew_till = (r.u32() for _ in range(4))
        is_skey = r.u8()
        flags = r.u32()
        r.skip_list()  # addresses
        r.skip_list()  # authdata
        r.counted()  # ticket
        r.counted()  # second ticket
        if server.is_config:
            config += 1
            continue
        creds.append(
            Credential(
                client=client,
                server=server,
                authtime=authtime,
                starttime=starttime,
                endtime=endtime,
                renew_till=renew_till,
                flags=TicketFlags(flags),
                is_skey=bool(is_skey),
                raw=data[start : r.pos],
            )
        )
    return CCache(
        version=version,
        principal=principal,
        credentials=tuple(creds),
        config_entries=config,
        kdc_offset=kdc_offset,
    )


def _pack_counted(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def _pack_principal(p: Principal) -> bytes:
    out = [struct.pack(">II", p.name_type, len(p.components)), _pack_counted(p.realm.encode())]
    out.extend(_pack_counted(c.encode()) for c in p.components)
    return b"".join(out)


def serialize(principal: Principal, entries: Iterable[bytes]) -> bytes:
    """Build a FILE ccache (v4, no header tags) from a principal and raw entries."""
    return b"".join(
        [struct.pack(">HH", FCC_VERSION_4, 0), _pack_principal(principal), *entries]
    )


def _pack_entry(
    client: Principal,
    server: Principal,
    *,
    authtime: int,
    starttime: int,
    endtime: int,
    renew_till: int,
    flags: int,
    key: bytes = b"\0" * 32,
    enctype: int = 18,
    ticket: bytes = b"",
) -> bytes:
    """Build one raw credential entry.  Used by tests and tools to make synthetic
    caches; a ccache made from it is readable by klist but not usable at a KDC."""
    return b"".join(
        [
            _pack_principal(client),
            _pack_principal(server),
            struct.pack(">H", enctype),
            _pack_counted(key),
            struct.pack(">IIII", authtime, starttime, endtime, renew_till),
            struct.pack(">B", 0),
            struct.pack(">I", int(flags)),
            struct.pack(">I", 0),
            struct.pack(">I", 0),
            _pack_counted(ticket),
            _pack_counted(b""),
        ]
    )


# ---------------------------------------------------------------------------
# reading files safely


def read_ccache(
    name: str,
    *,
    expected_uid: int,
    dir_fd: Optional[int] = None,
    max_size: int = MAX_CCACHE_SIZE,
) -> tuple[bytes, CCache, os.stat_result]:
    """Read a private ticket cache safely (:func:`appliance.privfile.read_private`) and parse it.

    Returns ``(bytes, parsed, fstat)``. Raises :class:`~appliance.privfile.FileRefused` or
    :class:`CredentialRefused` ``malformed`` (not a FILE v4 ccache).
    """
    data, st = read_private(name, expected_uid=expected_uid, max_size=max_size, dir_fd=dir_fd)
    try:
        return data, parse(data), st
    except CCacheError as exc:
        raise CredentialRefused("malformed", f"not a usable ticket cache: {exc}") from None


# ---------------------------------------------------------------------------
# policy


def check_tgt(cc: CCache, expected_principal: str, now: float) -> Credential:
    """Return the cache's TGT if it belongs to ``expected_principal`` and is usable.

    Raises :class:`CredentialRefused` with ``wrong_principal``, ``no_tgt``,
    ``invalid``, ``expired`` or ``not_renewable``.
    """
    if str(cc.principal) != expected_principal:
        raise CredentialRefused(
            "wrong_principal",
            f"cache belongs to {cc.principal}, expected {expected_principal}",
        )
    tgt = cc.tgt
    if tgt is None:
        raise CredentialRefused("no_tgt", "cache holds no ticket-granting ticket")
    if tgt.flags & TicketFlags.INVALID:
        raise CredentialRefused("invalid", "ticket is marked invalid (postdated)")
    if tgt.endtime <= now:
        raise CredentialRefused("expired", "ticket has expired")
    if not tgt.renewable:
        raise CredentialRefused("not_renewable", "ticket is not renewable")
    return tgt


# ---------------------------------------------------------------------------
# renewal (pykrb5)


def renew(data: bytes) -> bytes:
    """Renew the TGT in a ccache image at the KDC; return a new image (principal + renewed TGT).

    Uses the process's Kerberos configuration (``/etc/krb5.conf`` or
    ``KRB5_CONFIG``).  Raises :class:`RenewError` if the KDC refuses or cannot be
    reached, :class:`CCacheError` if ``data`` holds no TGT.
    """
    cc = parse(data)
    tgt = cc.tgt
    if tgt is None:
        raise CCacheError("no TGT for the default principal")
    try:
        import krb5  # pykrb5
    except ImportError as exc:  # pragma: no cover - depends on install
        raise RenewError("the 'krb5' (pykrb5) package is not installed") from exc

    try:
        ctx = krb5.init_context()
        creds = krb5.unmarshal_credentials(ctx, tgt.raw)
        mem = krb5.cc_new_unique(ctx, b"MEMORY")
        try:
            krb5.cc_initialize(ctx, mem, creds.client)
            krb5.cc_store_cred(ctx, mem, creds)
            new = krb5.get_renewed_creds(ctx, creds.client, mem, None)
            raw = krb5.marshal_credentials(ctx, new)
        finally:
            krb5.cc_destroy(ctx, mem)
    except krb5.Krb5Error as exc:
        # The library's message names the failure (e.g. "Cannot contact any KDC
        # for realm ..."), never ticket contents.
        raise RenewError(str(getattr(exc, "message", exc)) or "renewal failed") from None

    out = serialize(cc.principal, [raw])
    renewed = parse(out).tgt
    if renewed is None or renewed.client != cc.principal:
        raise RenewError("KDC returned a ticket for another principal")
    return out
