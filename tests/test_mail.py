"""SMTP sending against a real SMTP server: batches, and failures classified."""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

from hub.mail import Mailer
from hub.mail import PermanentMailError
from hub.mail import TemporaryMailError
from hub.mail import UncertainMailError
from tests.conftest import CollectingHandler
from tests.conftest import free_port


def settings(port: int, **overrides) -> dict:
    config = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": port,
        "SMTP_SECURITY": "none",
        "SMTP_USER": "",
        "SMTP_PASSWORD": "",
    }
    config.update(overrides)
    return config


def message(n: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", f"b{n}@example.com", f"#{n}"
    msg.set_content("hello")
    return msg


def test_a_batch_uses_one_connection(smtp_server):
    with Mailer(settings(smtp_server.port)) as mailer:
        for n in range(3):
            mailer.send(message(n))
    handler = smtp_server.handler
    assert [m["Subject"] for m in handler.messages] == ["#0", "#1", "#2"]
    assert len(set(handler.peers)) == 1


def test_server_down_is_temporary_and_named():
    port = free_port()
    with pytest.raises(TemporaryMailError) as caught:
        Mailer(settings(port)).send(message(1))
    assert str(caught.value).startswith(f"Cannot talk to the SMTP server at 127.0.0.1:{port}: ")
    assert "HUB_SMTP_HOST" in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "error"),
    [("451 4.3.0 Try again later", TemporaryMailError), ("554 5.7.1 Rejected", PermanentMailError)],
)
def test_server_replies_are_classified(smtp_server, reply, error):
    smtp_server.handler.reply = reply
    with pytest.raises(error, match=reply.split(" ", 1)[0]) as info:
        Mailer(settings(smtp_server.port)).send(message(1))
    assert info.value.temporary is (error is TemporaryMailError)


def test_refused_login_is_temporary_and_names_the_settings():
    def authenticator(server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        return AuthResult(success=auth_data.password == b"right", handled=False)

    controller = Controller(
        CollectingHandler(),
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        good = settings(controller.port, SMTP_USER="hub", SMTP_PASSWORD="right")
        Mailer(good).send(message(1))
        assert len(controller.handler.envelopes) == 1
        bad = settings(controller.port, SMTP_USER="hub", SMTP_PASSWORD="wrong")
        with pytest.raises(TemporaryMailError, match="HUB_SMTP_USER"):
            Mailer(bad).send(message(2))
    finally:
        controller.stop()


def test_connection_lost_during_data_is_uncertain_and_dropped():
    """The server takes the message, then closes without answering: maybe delivered."""

    class Vanishing(CollectingHandler):
        async def handle_DATA(self, server, session, envelope):
            self.envelopes.append(envelope)
            server.transport.close()
            return None

    controller = Controller(Vanishing(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        mailer = Mailer(settings(controller.port))
        with pytest.raises(UncertainMailError, match="may have been delivered"):
            mailer.send(message(1))
        assert mailer._smtp is None
        assert len(controller.handler.envelopes) == 1
    finally:
        controller.stop()


def test_refused_sender_is_a_setup_problem(smtp_server):
    class RefuseSender(CollectingHandler):
        async def handle_MAIL(self, server, session, envelope, address, options):
            return "553 5.7.1 Sender not allowed"

    smtp_server.handler.__class__ = RefuseSender
    with pytest.raises(TemporaryMailError, match="HUB_MAIL_FROM"):
        Mailer(settings(smtp_server.port)).send(message(1))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, as a private mail relay might have."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return folder / "cert.pem", folder / "key.pem"


def server_context(tls_files):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    return context


def test_starttls_with_a_trusted_private_ca(tls_files):
    controller = Controller(
        CollectingHandler(),
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=server_context(tls_files),
        require_starttls=True,
    )
    controller.start()
    try:
        trusted = settings(
            controller.port, SMTP_SECURITY="starttls", SMTP_CA_FILE=str(tls_files[0])
        )
        Mailer(trusted).send(message(1))
        assert len(controller.handler.envelopes) == 1
        # Without trusting that CA the certificate is refused, and nothing is sent.
        with pytest.raises(TemporaryMailError, match="CERTIFICATE_VERIFY_FAILED"):
            Mailer(settings(controller.port, SMTP_SECURITY="starttls")).send(message(2))
        assert len(controller.handler.envelopes) == 1
    finally:
        controller.stop()


def test_implicit_tls(tls_files):
    controller = Controller(
        CollectingHandler(),
        hostname="127.0.0.1",
        port=free_port(),
        ssl_context=server_context(tls_files),
    )
    controller.start()
    try:
        config = settings(controller.port, SMTP_SECURITY="ssl", SMTP_CA_FILE=str(tls_files[0]))
        Mailer(config).send(message(1))
        assert len(controller.handler.envelopes) == 1
    finally:
        controller.stop()
