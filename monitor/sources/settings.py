"""What every source's config shares, whichever the upstream: the name and the response body
cap. Each vendor's `config.py` builds its model on `SourceConfig`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator

from monitor.schema import SourceName, Strict
from monitor.sources.http import DEFAULT_MAX_BODY, parse_byte_size

# A byte count: an int, or a string such as `64MiB`, `512KiB`, `10MB` (see parse_byte_size).
ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]


class SourceConfig(Strict):
    name: SourceName
    # A larger response fails the request as bad_response: a broken or hostile upstream
    # cannot make the daemon buffer without bound.
    max_body: ByteSize = DEFAULT_MAX_BODY
