"""The NAVER simulator's model: API Gateway and Live Station error codes and bodies, event
descriptions, and what counts as publishing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

MAX_SKEW_MS = 5 * 60 * 1000
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100

# API Gateway errors: code → (HTTP status, message). Body errorCode is a string.
GATEWAY_ERRORS: dict[str, tuple[int, str]] = {
    "100": (400, "Bad Request Exception"),
    "200": (401, "Authentication Failed"),
    "210": (401, "Permission Denied"),
    "230": (403, "Forbidden"),
    "300": (404, "Not Found Exception"),
    "430": (413, "Request Entity Too Large"),
    "400": (429, "Quota Exceeded"),
    "410": (429, "Throttle Limited"),
    "420": (429, "Rate Limited"),
    "500": (503, "Endpoint Error"),
    "510": (504, "Endpoint Timeout"),
    "900": (500, "Unexpected Error"),
}

# Live Station errors: errorName → errorCode (a number in the documented example).
LIVE_STATION_CODES: dict[str, int] = {
    "EXCEPTION": 250000,
    "CUSTOM_MESSAGE": 250001,
    "INVALID_FORMAT": 250002,
    "REQUIRED_HEADER": 250003,
    "NOT_FOUND": 250004,
    "NOT_AVAILABLE": 250005,
    "UNAUTHORIZED": 250006,
    "CONNECTION_FAILED": 250007,
    "REQUEST_FAILED": 250008,
    "THIRD_SERVER_EXCEPTION": 250009,
    "POLICY_CHECK_FAILED": 250010,
    "NEED_VALUE": 250011,
    "JSON_PARSE_GENERAL_ERROR": 250012,
    "INTERNAL_SERVER_ERROR": 250016,
    "OPEN_API_INVALID_REGION_CODE": 250020,
}

EVENT_DESCRIPTIONS = {
    "STREAM_RESERVE": "{name} channel has been created.",
    "STREAM_UPDATE": "{name} channel settings have been changed.",
    "PUBLISH_START": "{name} channel publishing has started.",
    "PUBLISH_END": "{name} channel publishing has ended.",
    "ONAIR_START": "{name} channel recording has started.",
    "ONAIR_END": "{name} channel recording has ended.",
}


def gateway_error(code: str, details: str | None = None) -> web.Response:
    status, message = GATEWAY_ERRORS[code]
    error: dict[str, Any] = {"errorCode": code, "message": message}
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status)


def live_station_error(status: int, name: str, message: str) -> web.Response:
    body = {
        "error": {
            "errorCode": LIVE_STATION_CODES.get(name, 250000),
            "message": message,
            "errorName": name,
        }
    }
    return web.json_response(body, status=status)


def is_publishing(status: str) -> bool:
    return status in ("PUBLISHING", "PUBLISH")


# [sim] the status of a Live Station error name when a fault gives none
_LIVE_STATION_STATUSES = {
    "EXCEPTION": 500,
    "INTERNAL_SERVER_ERROR": 500,
    "THIRD_SERVER_EXCEPTION": 500,
    "CONNECTION_FAILED": 500,
    "REQUEST_FAILED": 500,
    "NOT_FOUND": 404,
    "UNAUTHORIZED": 401,
}


def status_of(code: str | None) -> int:
    """The HTTP status of a gateway code or a Live Station error name (500 without a code)."""
    if code is None:
        return 500
    if code in GATEWAY_ERRORS:
        return GATEWAY_ERRORS[code][0]
    return _LIVE_STATION_STATUSES.get(code, 400)


# [sim] the error body a fault with a status and no code answers
_DEFAULT_CODES = {
    401: "200",
    403: "230",
    413: "430",
    429: "420",
    400: "INVALID_FORMAT",
    404: "NOT_FOUND",
}


def error_for(status: int, code: str | None, message: str | None) -> web.Response:
    """A gateway body for a gateway code, else a Live Station body (5xx: EXCEPTION)."""
    code = code or _DEFAULT_CODES.get(status, "EXCEPTION")
    if code in GATEWAY_ERRORS:
        body = gateway_error(code, message or "simulated")
        body.set_status(status)
        return body
    if message is None:
        message = "Unexpected error occurred." if code == "EXCEPTION" else f"{code} (simulated)"
    return live_station_error(status, code, message)
