"""Structured logs: one line per event, logfmt or JSON. Secrets are kept out at the source
(SecretStr, errors built without URLs or headers), not scrubbed here.

The house rule: the message is a short constant that names the event ("source down", "alert
transition"), and everything that varies is a field passed with `extra=`:

    log.warning("source down", extra={"source": str(ref), "reason": failure.reason})

so logfmt prints `msg="source down" source=ome/origin-1 reason=timeout` and JSON carries
`"source": "ome/origin-1"` as its own key. `extra` may not use LogRecord's own attribute names
(`name`, `msg`, `args`, `module`, ...): logging raises KeyError for those.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


def timestamp(record: logging.LogRecord) -> str:
    """RFC 3339 in UTC with milliseconds, the same in both formats."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{ts}.{int(record.msecs):03d}Z"


def fields(record: logging.LogRecord) -> dict[str, object]:
    """The fields a call passed with `extra=`."""
    return {k: v for k, v in vars(record).items() if k not in _RESERVED}


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={timestamp(record)}",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={_logfmt_value(record.getMessage())}",
        ]
        parts += [f"{k}={_logfmt_value(v)}" for k, v in fields(record).items()]
        if record.exc_info:
            parts.append(f"exc={_logfmt_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data |= fields(record)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup_logging(fmt: str = "logfmt", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler logs every job run at INFO; our own poll lines say what matters.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
