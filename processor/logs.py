"""Logging set-up with a scrubber: configured secret values never reach a log line.

The scrubbing happens on the fully formatted text, so a secret inside an exception message or a
traceback (log.exception) is removed too, not only one in the log message itself.
"""

from __future__ import annotations

import logging
import sys


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
