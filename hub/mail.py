"""Sending email over SMTP, one connection per batch, with failures classified."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Mapping
from email import policy as email_policy
from email.headerregistry import Address
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from email.utils import formatdate
from email.utils import make_msgid
from typing import Any


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, making each header's class once: the stock one
    makes a new class for every header of every message, a third of the time it takes
    to build a survey email."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


#: `email.policy.default`, with each header class made once.
POLICY = email_policy.default.clone(header_factory=_HeaderClasses())


def new_message() -> EmailMessage:
    """An empty message under `POLICY` (the standard policy, built faster)."""
    return EmailMessage(policy=POLICY)


class MailError(Exception):
    """Sending failed; `temporary` says whether trying again later may work."""

    temporary = True


class TemporaryMailError(MailError):
    """The server is down, busy or refused for now (4xx, connection, login): retry later."""


class PermanentMailError(MailError):
    """The server rejected this message for good (5xx), e.g. an unknown mailbox."""

    temporary = False


class UncertainMailError(MailError):
    """The connection broke while the message was being sent: it may have been delivered.

    Sending again could mean sending twice, so the caller must not retry by itself.
    """

    temporary = False


def _classify(exc: Exception, where: str = "") -> MailError:
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        # A login problem is the admin's to fix; the message itself is fine.
        return TemporaryMailError(
            f"The SMTP server refused the login ({exc.smtp_code}): check HUB_SMTP_USER and "
            "HUB_SMTP_PASSWORD."
        )
    if isinstance(exc, smtplib.SMTPSenderRefused):
        # The server refuses our From address: a setup problem, not this message's.
        return TemporaryMailError(
            f"The SMTP server refused the sender {exc.sender} ({exc.smtp_code}): check "
            "HUB_MAIL_FROM and the server's relay settings."
        )
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(
            f"{rcpt}: {code} {msg.decode(errors='replace')}"
            for rcpt, (code, msg) in exc.recipients.items()
        )
        error_class = PermanentMailError if all(c >= 500 for c in codes) else TemporaryMailError
        return error_class(f"The SMTP server refused the recipient ({detail}).")
    if isinstance(exc, smtplib.SMTPResponseException):
        text = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else exc.smtp_error
        )
        error_class = PermanentMailError if exc.smtp_code >= 500 else TemporaryMailError
        return error_class(f"The SMTP server answered {exc.smtp_code} {text}")
    server = f"the SMTP server at {where}" if where else "the SMTP server"
    return TemporaryMailError(
        f"Cannot talk to {server}: {exc or type(exc).__name__} (check HUB_SMTP_HOST and "
        "HUB_SMTP_PORT)."
    )


class Mailer:
    """An SMTP session from the app's settings; use as a context manager for a batch."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.host = config["SMTP_HOST"] or "localhost"
        self.port = config["SMTP_PORT"]
        self.security = config["SMTP_SECURITY"]
        self.user = config["SMTP_USER"]
        self.password = config["SMTP_PASSWORD"]
        self.ca_file = config.get("SMTP_CA_FILE") or None
        self.timeout = 30
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> Mailer:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def connect(self) -> None:
        """Open the connection (TLS and login as configured)."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.security == "ssl":
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
                if self.security == "starttls":
                    smtp.starttls(context=context)
            if self.user:
                smtp.login(self.user, self.password)
        except (smtplib.SMTPException, OSError) as exc:
            raise _classify(exc, f"{self.host}:{self.port}") from exc
        self._smtp = smtp

    def send(self, message: EmailMessage) -> None:
        """Send one message on the open connection (opening it if needed)."""
        if self._smtp is None:
            self.connect()
        try:
            self._smtp.send_message(message)
        except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
            raise _classify(exc) from exc  # a clear answer; the connection is still usable
        except (smtplib.SMTPException, OSError) as exc:
            # No answer, or half of one: the connection's state is unknown, so drop it,
            # and the message may or may not have gone out.
            self.close()
            raise UncertainMailError(
                f"The connection to the SMTP server broke while sending ({exc}); the "
                "email may have been delivered."
            ) from exc

    def close(self) -> None:
        """Say QUIT, ignoring a connection that is already gone."""
        if self._smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
            self._smtp = None


def staff_email(
    mail_from: str, name: str, address: str, subject: str, text: str, kind: str
) -> EmailMessage:
    """A plain-text email from SurveyHub to one of its users (an invitation, an alert);
    `kind` names it in the Message-ID."""
    message = new_message()
    message["Subject"] = subject
    message["From"] = Address(display_name="SurveyHub", addr_spec=mail_from)
    message["To"] = Address(display_name=" ".join(name.split()), addr_spec=address)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(kind, domain=mail_from.rpartition("@")[2] or None)
    message.set_content(text)
    return message
