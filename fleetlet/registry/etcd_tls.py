"""TLS to etcd (``https://`` endpoints): the client's one SSL context, and what a failed handshake means.

The context trusts ``ca_file`` (PEM) if given, else the system's trust store; ``cert_file`` and ``key_file`` are
the client certificate etcd asks for under ``--client-cert-auth`` (the key may be in ``cert_file``). The files are
read once, when the registry is built, so a missing or unreadable one is a :class:`ValueError` naming it then, not
an error at the first call.

etcd's gateway refuses a client certificate with a CommonName on a cluster with authentication enabled ("CommonName
of client sending a request against gateway will be ignored"): with user/password authentication, the client
certificate must have an empty CN.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext:
    """The SSL context for every connection to etcd; ValueError naming the file that cannot be used."""
    if key_file is not None and cert_file is None:
        raise ValueError(f"etcd TLS: a key file ({key_file}) needs its certificate file")
    if ca_file is not None:
        _check_readable("CA file", ca_file)
        try:
            context = ssl.create_default_context(cafile=str(ca_file))
        except ssl.SSLError as exc:
            raise ValueError(f"etcd TLS: CA file {ca_file} holds no usable certificate ({_ssl_reason(exc)})") from exc
    else:
        context = ssl.create_default_context()  # the system's trust store
    if cert_file is not None:
        _check_readable("certificate file", cert_file)
        if key_file is not None:
            _check_readable("key file", key_file)
        try:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
        except ssl.SSLError as exc:
            files = f"{cert_file} and {key_file}" if key_file is not None else str(cert_file)
            raise ValueError(
                f"etcd TLS: no client certificate and matching key in {files} ({_ssl_reason(exc)})"
            ) from exc
    return context


def handshake_refused(exc: BaseException) -> str | None:
    """Why TLS failed, if ``exc`` is a TLS failure (else None), in words that say what to check.

    A server that refuses our certificate (or our lack of one) may only say so after the client's side of a TLS 1.3
    handshake has finished, so the refusal can arrive as the request's read failing: then too nothing reached etcd.
    """
    cause = _ssl_error(exc)
    if cause is None:
        return None
    if isinstance(cause, ssl.SSLCertVerificationError):
        why = getattr(cause, "verify_message", None) or _ssl_reason(cause)
        return f"TLS: etcd's certificate is not trusted ({why}): is the CA file the cluster's CA?"
    reason = _ssl_reason(cause)
    if "CERTIFICATE" in reason.upper():
        return f"TLS: etcd refused the client certificate, or its absence ({reason})"
    return f"TLS handshake failed ({reason})"


def certificate_refused(exc: BaseException) -> str | None:
    """:func:`handshake_refused`'s message, but only for a certificate refused or not trusted: the one TLS failure
    that may break a request's first read although etcd never received the request (TLS 1.3 judges the client's
    certificate after the client has sent). Any other TLS error after sending may follow an applied write."""
    cause = _ssl_error(exc)
    if cause is None:
        return None
    if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE" in _ssl_reason(cause).upper():
        return handshake_refused(exc)
    return None


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The SSLError behind ``exc``, if any: in its causes, or held by aiohttp's wrappers of it (which are
    SSLErrors themselves, without the original's details)."""
    seen: BaseException | None = exc
    while seen is not None:
        inner = getattr(seen, "certificate_error", None) or getattr(seen, "os_error", None)
        if isinstance(inner, ssl.SSLError):
            return inner
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _check_readable(what: str, path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"etcd TLS: {what} {path} cannot be read: {exc.strerror or exc}") from exc


def _ssl_reason(exc: BaseException) -> str:
    """An SSLError's words without the ``[SSL: ...]`` tag and the ``(_ssl.c:NNN)`` source line."""
    text = str(exc.args[1]) if isinstance(exc, OSError) and len(exc.args) > 1 else str(exc)
    if text.startswith("[SSL:") and "]" in text:
        text = text.split("]", 1)[1]
    return text.split(" (_ssl.c:")[0].strip() or type(exc).__name__
