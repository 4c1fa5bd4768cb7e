"""Stop sequences applied to text the judge writes inside its JSON verdict.

The judge's own output cannot be cut by the backend at a client's stop sequence (that would break the JSON),
so the answer is cut here, as it streams: a tail as long as the longest stop sequence is held back until it
cannot be the start of one.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopCutter", "cut_at_stop"]


def cut_at_stop(text: str, stops: Sequence[str] | None) -> str:
    """``text`` up to (not including) the earliest stop sequence."""
    found = [i for s in stops or () if s and (i := text.find(s)) != -1]
    return text[: min(found)] if found else text


class StopCutter:
    def __init__(self, stops: Sequence[str] | None) -> None:
        self.stops = [s for s in stops or () if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """What may be shown now of the text seen so far."""
        if self.stopped:
            return ""
        self.buffer += text
        cut = cut_at_stop(self.buffer, self.stops)
        if len(cut) < len(self.buffer):
            self.stopped, self.buffer = True, ""
            return cut
        if self.hold == 0:
            out, self.buffer = self.buffer, ""
            return out
        out, self.buffer = self.buffer[: -self.hold], self.buffer[-self.hold :]
        return out

    def flush(self) -> str:
        """The held-back tail, once the text is complete."""
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out
