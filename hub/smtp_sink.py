"""A local SMTP sink for laptops: accepts every email and keeps it in `instance/outbox`."""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from aiosmtpd.controller import Controller


class OutboxHandler:
    """aiosmtpd handler writing each message to its own .eml file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server, session, envelope) -> str:
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        partial = self.folder / f".{name}.part"
        partial.write_bytes(envelope.original_content or envelope.content)
        os.replace(partial, self.folder / name)  # readers never see half a message
        return "250 Message kept in the SurveyHub outbox"


def serve(folder: Path, host: str, port: int, stop: threading.Event) -> None:
    """Accept mail on host:port until `stop` is set."""
    controller = Controller(OutboxHandler(folder), hostname=host, port=port)
    controller.start()
    try:
        stop.wait()
    finally:
        controller.stop()


@dataclass(frozen=True)
class OutboxMessage:
    """One message in the outbox, parsed."""

    name: str
    message: EmailMessage

    @property
    def html(self) -> str:
        part = self.message.get_body(("html",))
        return part.get_content() if part else ""

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        return part.get_content() if part else ""


def read_message(folder: Path, name: str) -> OutboxMessage | None:
    """The message called `name`, or None (also for names that try to leave the folder)."""
    path = folder / name
    if path.parent != folder or not name.endswith(".eml") or not path.is_file():
        return None
    with path.open("rb") as handle:
        return OutboxMessage(name, BytesParser(policy=policy.default).parse(handle))


def list_messages(folder: Path, limit: int = 200) -> list[OutboxMessage]:
    """The newest messages first."""
    if not folder.is_dir():
        return []
    names = sorted((p.name for p in folder.glob("*.eml")), reverse=True)[:limit]
    return [m for m in (read_message(folder, n) for n in names) if m is not None]
