"""Pull one top-level string field out of a JSON object while it is still being generated.

The judge writes its verdict as JSON with the fused answer as the last field; this lets the answer stream to
the user token by token instead of waiting for the closing brace.
"""

from __future__ import annotations

__all__ = ["FieldStreamer"]

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class FieldStreamer:
    """Feed raw JSON text; ``feed`` returns the newly decoded characters of the watched top-level field."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.key_buf: list[str] | None = None  # collecting a top-level key
        self.last_key: str | None = None
        self.expect_value = False
        self.capturing = False
        self.done = False
        self._unicode: str | None = None  # pending \uXXXX digits while capturing
        self._high: int | None = None  # pending high surrogate
        self.value: list[str] = []

    def feed(self, chunk: str) -> str:
        out: list[str] = []
        for ch in chunk:
            if self.capturing:
                self._capture(ch, out)
            else:
                self._scan(ch)
        text = "".join(out)
        self.value.append(text)
        return text

    def _capture(self, ch: str, out: list[str]) -> None:
        if self._unicode is not None:
            self._unicode += ch
            if len(self._unicode) == 4:
                try:
                    code = int(self._unicode, 16)
                except ValueError:
                    code = 0xFFFD
                self._unicode = None
                if 0xD800 <= code < 0xDC00:
                    self._high = code
                    return
                if 0xDC00 <= code < 0xE000 and self._high is not None:
                    code = 0x10000 + ((self._high - 0xD800) << 10) + (code - 0xDC00)
                self._high = None
                out.append(chr(code) if not 0xD800 <= code < 0xE000 else "\ufffd")
            return
        if self.escape:
            self.escape = False
            if ch == "u":
                self._unicode = ""
            else:
                out.append(_ESCAPES.get(ch, ch))
            return
        if ch == "\\":
            self.escape = True
        elif ch == '"':
            self.capturing = False
            self.in_string = False
            self.done = True
        else:
            out.append(ch)

    def _scan(self, ch: str) -> None:
        if self.in_string:
            if self.escape:
                self.escape = False
                if self.key_buf is not None:
                    self.key_buf.append(ch)
            elif ch == "\\":
                self.escape = True
            elif ch == '"':
                self.in_string = False
                if self.key_buf is not None:
                    self.last_key = "".join(self.key_buf)
                    self.key_buf = None
            elif self.key_buf is not None:
                self.key_buf.append(ch)
            return
        if ch == '"':
            self.in_string = True
            if self.depth == 1 and self.expect_value and self.last_key == self.field and not self.done:
                self.capturing = True
                self.expect_value = False
            elif self.depth == 1 and not self.expect_value:
                self.key_buf = []
            return
        if ch in "{[":
            self.depth += 1
            self.expect_value = False
        elif ch in "}]":
            self.depth -= 1
        elif ch == ":" and self.depth == 1:
            self.expect_value = True
        elif ch == "," and self.depth == 1:
            self.expect_value = False
            self.last_key = None
        elif not ch.isspace() and self.depth == 1:
            self.expect_value = False  # a number, true/false/null value

    @property
    def text(self) -> str:
        return "".join(self.value)
