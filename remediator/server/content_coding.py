"""A request body's Content-Encoding: which are accepted, and decoding them, bounded.

aiohttp's own decoding is off (`build_app`: `auto_decompress`): its parser refused `br` and
`zstd` bodies itself, before any middleware, with a plain-text 400 telling the client to
install Brotli on our server, and took an unknown coding (`foo`) for plain, acknowledging a
body nobody could read as what it was. Decoded here, every refusal is the app's own: a 415 in
the API's JSON shape that names what is accepted, or a 400 or 413 as for any body.
"""

from __future__ import annotations

import zlib

# What a webhook's body may come in: Alertmanager sends it plain; a proxy may compress it.
WEBHOOK = ("identity", "gzip", "deflate")
# Everything else (console forms, the API) takes plain bodies only: browsers send no other.
OTHER = ("identity",)


class BodyError(ValueError):
    """A body its Content-Encoding cannot decode (400), or decoded past the limit (413)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def coding(header: str | None) -> str:
    """The coding a Content-Encoding header names ("" for none), as compared."""
    return (header or "").strip().lower()


def refusal(name: str, accepted: tuple[str, ...]) -> str | None:
    """The 415's message for a body in coding `name`, or None if it is accepted."""
    if not name or name in accepted:
        return None
    return (f"Content-Encoding {name!r} is not accepted here; send the body as one of: "
            + ", ".join(accepted))


def decoded(body: bytes, name: str, limit: int) -> bytes:
    """The body as sent before its coding (`WEBHOOK`'s), at most `limit` bytes: decompressed
    in one bounded step, so a small body that expands without end (a zip bomb) costs no more
    than `limit`. A body that ends early or carries bytes after its end is refused."""
    if name not in ("gzip", "deflate"):
        return body
    # gzip's header; for deflate a zlib stream, or a raw one as some clients send (aiohttp's
    # rule: a zlib stream's first byte names method 8 in its low bits).
    wbits = 31 if name == "gzip" else 15 if body[:1] and body[0] & 0x0F == 8 else -15
    stream = zlib.decompressobj(wbits)
    try:
        plain = stream.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BodyError(f"cannot decode content-encoding: {name} ({exc})") from None
    if len(plain) > limit:
        raise BodyError(f"body exceeds {limit} bytes once decoded ({name})", 413)
    if not stream.eof or stream.unused_data:
        raise BodyError(f"cannot decode content-encoding: {name} (the compressed body "
                        + ("ends early)" if not stream.eof else "has bytes after its end)"))
    return plain
