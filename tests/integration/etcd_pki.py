"""A throwaway certificate authority for TLS etcd members, made with the ``openssl`` command.

One CA signs a server certificate for 127.0.0.1 (which etcd's gateway also presents as a client, to its own gRPC
server, under ``--client-cert-auth``: hence both key usages) and a client certificate. The client certificate has
no CommonName: etcd's gateway refuses one that has a CN once authentication is enabled.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")  # fast to make, unlike RSA


@dataclass(frozen=True)
class Pki:
    """The files of a test CA, in ``root``."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.root / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.root / "client.key"


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _signed(root: Path, name: str, subject: str, extensions: str) -> None:
    (root / f"{name}.ext").write_text(extensions)
    _openssl("req", "-new", *_EC_KEY, "-subj", subject, "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=root)
    _openssl(
        *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"),
        *("-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem"),
        cwd=root,
    )


def make_pki(root: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, written to ``root`` (which must exist)."""
    if shutil.which("openssl") is None:
        pytest.fail("no openssl command: install Debian's openssl package")
    _openssl(
        "req",
        "-x509",
        *_EC_KEY,
        "-subj",
        "/CN=fleetlet test CA",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=root,
    )
    server_ext = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    _signed(root, "server", "/CN=etcd test server", server_ext)
    _signed(root, "client", "/O=fleetlet test client", "extendedKeyUsage=clientAuth\n")
    return Pki(root)
