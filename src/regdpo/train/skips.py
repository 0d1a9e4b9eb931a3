"""What training reports about pairs it could not read (``train_region_reg_dpo.py --skip_invalid``).

``DPODataset(skip_invalid=True)`` passes over a pair whose files cannot be read when its item is made (a frame
damaged after the dataset was built) and lists it in the item's ``"skipped"``; :class:`SkippedPairs` collects
those lists from the collated batches (items may come from ``DataLoader`` worker processes), so each pair is
reported once, in one line naming the file, and counted. :func:`one_line_error` turns an error re-raised from a
``DataLoader`` worker (whose message holds the worker's whole traceback) back into its one line.
"""

from __future__ import annotations

from typing import Any, Mapping

TRACEBACK_MARK = "Traceback (most recent call last)"


class SkippedPairs:
    """The distinct pairs passed over so far (``"video/stream"`` -> the reason, one line naming the file)."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def add(self, batch: Mapping[str, Any]) -> list[str]:
        """Take the ``"skipped"`` lists of a collated batch; returns one line per pair not seen before."""
        new = []
        for per_item in batch.get("skipped") or ():
            for record in per_item:
                pair, reason = str(record["pair"]), str(record["reason"])
                if pair not in self.reasons:
                    self.reasons[pair] = reason
                    new.append(f"skipped the unreadable pair {pair}: {reason}")
        return new

    def __len__(self) -> int:
        return len(self.reasons)


def one_line_error(exc: BaseException) -> str:
    """The message of ``exc`` on one line; for one re-raised from a ``DataLoader`` worker (``Caught X in
    DataLoader worker process 0. Original Traceback ...``), the worker's own message (the traceback's last
    line, without the exception's module and class)."""
    text = str(exc)
    if TRACEBACK_MARK in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = lines[-1] if lines else text
        name = type(exc).__name__
        for prefix in (f"{type(exc).__module__}.{name}: ", f"{name}: "):
            if last.startswith(prefix):
                last = last[len(prefix):]
                break
        else:
            head, sep, rest = last.partition(": ")
            if sep and head.replace(".", "").replace("_", "").isalnum() and head.split(".")[-1][:1].isupper():
                last = rest
        text = last
    return " ".join(text.split())


def close_progress_bars() -> None:
    """Close every open tqdm bar (ends its line), so that an error printed next starts a line of its own
    instead of being glued to the bar's text."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # a bar half torn down: nothing to end
            pass
