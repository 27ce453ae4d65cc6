"""Logging set-up with a scrubber: configured secret values never reach a log line.

The scrubbing happens on the fully formatted text, so a secret inside an exception message or a
traceback (log.exception) is removed too, not only one in the log message itself. Exceptions that
end a thread or the main program are routed through logging as well: Python's default hooks print
them straight to stderr, past the scrubber.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType


class ScrubbingFormatter(logging.Formatter):
    def __init__(self, fmt: str, secrets: list[str]) -> None:
        super().__init__(fmt)
        # Very short values would turn ordinary words into "***"; real secrets are longer.
        self.secrets = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


def configure(level: str, secrets: list[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "urllib3", "numba", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    threading.excepthook = _thread_died
    sys.excepthook = _uncaught


def _thread_died(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # what the default hook does too
    name = args.thread.name if args.thread is not None else "?"
    exc = args.exc_value if args.exc_value is not None else args.exc_type()
    logging.getLogger("processor.thread").critical("thread %s died", name,
                                                   exc_info=(args.exc_type, exc, args.exc_traceback))


def _uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("processor").critical("uncaught exception", exc_info=(exc_type, exc, tb))
