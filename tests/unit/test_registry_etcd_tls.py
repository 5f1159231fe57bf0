"""Which TLS failures after a request was sent mean etcd never received it (the call may go to the next member)."""

from __future__ import annotations

import ssl

import aiohttp

from fleetlet.registry.etcd_tls import certificate_refused, handshake_refused


def _broken_read(cause: ssl.SSLError) -> aiohttp.ClientOSError:
    """How aiohttp reports a TLS error that broke a request's read: its own error, the SSL error as the cause."""
    error = aiohttp.ClientOSError(0, "read failed")
    error.__cause__ = cause
    return error


def test_a_refused_client_certificate_means_the_request_never_reached_etcd() -> None:
    refused = _broken_read(
        ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    )
    assert certificate_refused(refused) == (
        "TLS: etcd refused the client certificate, or its absence (tlsv13 alert certificate required)"
    )


def test_an_untrusted_server_certificate_is_a_refusal_too() -> None:
    untrusted = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert certificate_refused(_broken_read(untrusted)) is not None


def test_any_other_tls_error_after_sending_may_follow_an_applied_write() -> None:
    corrupt = _broken_read(
        ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed or bad record mac")
    )
    assert handshake_refused(corrupt) == "TLS handshake failed (decryption failed or bad record mac)"
    assert certificate_refused(corrupt) is None  # not retried on another member: not known to be unapplied
    assert certificate_refused(aiohttp.ClientOSError(104, "Connection reset by peer")) is None
