"""The driver data types keep secret material out of their text forms."""

from __future__ import annotations

from drivers.base import CredentialType, SlotContent, SlotWrite, secret_digest


def test_slot_records_do_not_show_secret_material() -> None:
    write = SlotWrite(3, CredentialType.PIN, b"r" * 16, 0, 10, b"482913")
    content = SlotContent(3, True, 1, b"r" * 16, 0, 10, secret_digest(b"482913"))
    for text in (repr(write), repr(content), str(content)):
        assert "482913" not in text and secret_digest(b"482913").hex() not in text
        assert repr(secret_digest(b"482913")) not in text
