"""FIX over TLS (issue 12): `ccerx serve --tls-cert/--tls-key [--tls-client-ca]`.

Certificates are made at test time (a test CA, a server certificate for 127.0.0.1, client
certificates from that CA and from a stranger's CA) with the `cryptography` package, or the
`openssl` command where that is not installed. The broker is tests/fixclient.py's simplefix
client with its socket wrapped in an ssl context."""
from __future__ import annotations

import datetime
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixclient import Broker, s
from tests.serve_process import REPO


# ------------------------------------------------------------------ certificates
class Pki:
    """A CA and certificates it signs, as PEM files in `directory`."""

    def __init__(self, directory: Path, name: str):
        self.directory = directory
        self.name = name
        self.ca_cert, self.ca_key = self._make(f"{name}-ca", f"{name} test CA", None, ca=True)

    def issue(self, stem: str, common_name: str, server: bool = False) -> tuple[Path, Path]:
        return self._make(stem, common_name, (self.ca_cert, self.ca_key), server=server)

    def _make(self, stem, common_name, issuer, ca=False, server=False) -> tuple[Path, Path]:
        cert, key = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        try:
            import cryptography  # noqa: F401
        except ImportError:
            _openssl(cert, key, common_name, issuer, ca, server)
        else:
            _cryptography(cert, key, common_name, issuer, ca, server)
        return cert, key


def _cryptography(cert_path, key_path, common_name, issuer, ca, server) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    if issuer is None:
        issuer_name, signing_key = subject, key
    else:
        issuer_cert = x509.load_pem_x509_certificate(issuer[0].read_bytes())
        issuer_name = issuer_cert.subject
        signing_key = serialization.load_pem_private_key(issuer[1].read_bytes(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    elif server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(signing_key, hashes.SHA256())
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def _openssl(cert_path, key_path, common_name, issuer, ca, server) -> None:
    ext = ("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n" if ca else
           "basicConstraints=critical,CA:FALSE\n" + (
               "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
               if server else "extendedKeyUsage=clientAuth\n"))
    ext_file = cert_path.with_suffix(".ext")
    ext_file.write_text(ext)
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key_path))
    if issuer is None:
        run("req", "-x509", "-new", "-key", str(key_path), "-subj", f"/CN={common_name}",
            "-days", "1", "-sha256", "-extensions", "v3", "-config", str(_section(ext_file)),
            "-out", str(cert_path))
    else:
        csr = cert_path.with_suffix(".csr")
        run("req", "-new", "-key", str(key_path), "-subj", f"/CN={common_name}", "-out", str(csr))
        run("x509", "-req", "-in", str(csr), "-CA", str(issuer[0]), "-CAkey", str(issuer[1]),
            "-CAcreateserial", "-days", "1", "-sha256", "-extfile", str(ext_file),
            "-out", str(cert_path))


def _section(ext_file: Path) -> Path:
    config = ext_file.with_suffix(".cnf")
    config.write_text("[req]\ndistinguished_name=dn\n[dn]\n[v3]\n" + ext_file.read_text())
    return config


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    exchange = Pki(directory, "exchange")
    brokers = Pki(directory, "brokers")         # the CA that signs the brokers' certificates
    stranger = Pki(directory, "stranger")        # a CA the exchange does not trust
    return {
        "server": exchange.issue("server", "ccerx test exchange", server=True),
        "exchange_ca": exchange.ca_cert,
        "brokers_ca": brokers.ca_cert,
        "broker01": brokers.issue("broker01", "BROKER01"),
        "stranger": stranger.issue("stranger", "BROKER01"),
    }


def client_context(pki, cert_key=None) -> ssl.SSLContext:
    """What a broker's FIX engine configures: trust the exchange's CA, TLS 1.2 or later."""
    context = ssl.create_default_context(cafile=str(pki["exchange_ca"]))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_key is not None:
        context.load_cert_chain(*map(str, cert_key))
    return context


def trade_once(port: int, context: ssl.SSLContext, tag: str) -> None:
    """BROKER01 logs on over TLS, sends an order and gets its ExecutionReport."""
    broker = Broker("BROKER01", port, tls=context)
    reply = broker.logon("demo01", reset=True)       # a fresh client: both sides start at 1
    assert s(reply, 35) == "A", s(reply, 58)
    assert broker.sock.version() in ("TLSv1.2", "TLSv1.3")
    broker.new_order(f"tls-{tag}", "EMIT01", "1", 10, "60.00")
    report = broker.expect("8")
    assert (s(report, 150), s(report, 39), s(report, 11)) == ("0", "0", f"tls-{tag}")
    broker.logout()


def refused(broker: Broker, password: str = "demo01") -> None:
    """The connection fails (TLS alert, reset or EOF) before any Logon reply: never a timeout
    (a server that just hangs would pass a bare `raises(OSError)`)."""
    with pytest.raises(OSError) as failure:
        broker.logon(password)
    assert not isinstance(failure.value, TimeoutError), failure.value
    broker.close()


# ------------------------------------------------------------------ tests
def test_a_broker_trades_over_tls_and_plaintext_is_refused(tmp_path, pki, start_serve):
    cert, key = pki["server"]
    # off loopback TLS is what makes a listener acceptable (no --insecure-plaintext needed)
    server = start_serve("--host", "0.0.0.0", "--data-dir", str(tmp_path / "data"),
                         "--tls-cert", str(cert), "--tls-key", str(key))
    assert "TLS" in server.start_line
    refused(Broker("BROKER01", server.port))                    # plaintext Logon to a TLS port
    trade_once(server.port, client_context(pki), "1")
    # a client that does not trust the exchange's certificate refuses the server
    with pytest.raises(ssl.SSLCertVerificationError):
        Broker("BROKER01", server.port, tls=ssl.create_default_context()).connect()
    trade_once(server.port, client_context(pki), "2")           # the server is still fine


def test_client_certificates_are_required_and_verified(tmp_path, pki, start_serve):
    cert, key = pki["server"]
    server = start_serve("--data-dir", str(tmp_path / "data"), "--tls-cert", str(cert),
                         "--tls-key", str(key), "--tls-client-ca", str(pki["brokers_ca"]))
    refused(Broker("BROKER01", server.port, tls=client_context(pki)))          # no certificate
    refused(Broker("BROKER01", server.port,
                   tls=client_context(pki, pki["stranger"])))                  # unknown CA
    refused(Broker("BROKER01", server.port))                                   # plaintext
    trade_once(server.port, client_context(pki, pki["broker01"]), "c")


def serve_refusal(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "serve", "--port", "0",
                           "--data-dir", str(tmp_path / "data"), *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "exchange.example"])
def test_plaintext_off_loopback_is_refused_with_a_reason(tmp_path, host):
    done = serve_refusal(tmp_path, "--host", host)
    assert done.returncode == 2, done.stderr
    assert "--tls-cert" in done.stderr and "--insecure-plaintext" in done.stderr
    assert "in clear" in done.stderr
    assert not (tmp_path / "data").exists()                   # nothing was created


def test_insecure_plaintext_is_an_explicit_choice(tmp_path, start_serve):
    server = start_serve("--host", "0.0.0.0", "--insecure-plaintext",
                         "--data-dir", str(tmp_path / "data"))
    broker = Broker("BROKER01", server.port)
    assert s(broker.logon("demo01"), 35) == "A"
    broker.logout()


@pytest.mark.parametrize("args, why", [
    (["--tls-key", "KEY"], "--tls-key needs --tls-cert"),
    (["--tls-client-ca", "CA"], "--tls-client-ca needs --tls-cert"),
    (["--tls-cert", "/nonexistent/server.crt", "--tls-key", "/nonexistent/server.key"],
     "/nonexistent/server.crt"),
    (["--tls-cert", "WRONG", "--tls-key", "SERVER_KEY"], "cannot load"),
    (["--tls-cert", "SERVER", "--tls-key", "SERVER_KEY", "--tls-client-ca", "WRONG"],
     "cannot load"),
])
def test_bad_tls_options_are_refused_clearly(tmp_path, pki, args, why):
    wrong = tmp_path / "wrong.pem"
    wrong.write_text("not a certificate\n")
    files = {"SERVER": str(pki["server"][0]), "SERVER_KEY": str(pki["server"][1]),
             "WRONG": str(wrong)}
    args = [files.get(a, a) for a in args]
    done = serve_refusal(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert why in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "data").exists()


def test_a_stalled_handshake_is_dropped_within_seconds_not_a_minute(tmp_path, pki, start_serve):
    """A client that opens a TCP connection to the TLS port and sends part of a ClientHello
    held a descriptor for asyncio's default 60 s (a review ran the process out of descriptors
    this way); the handshake now times out after TLS_HANDSHAKE_TIMEOUT (5 s)."""
    import socket
    import time
    cert, key = pki["server"]
    server = start_serve("--data-dir", str(tmp_path / "data"), "--tls-cert", str(cert),
                         "--tls-key", str(key))
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")   # 11 bytes of a hello
    stalled.settimeout(30)
    started = time.monotonic()
    try:
        closed = stalled.recv(1) == b""
    except (ConnectionResetError, TimeoutError) as err:
        closed = isinstance(err, ConnectionResetError)
    waited = time.monotonic() - started
    stalled.close()
    assert closed and waited < 30, waited        # (a bound on a wait, not a timing figure)
    trade_once(server.port, client_context(pki), "after-stall")
