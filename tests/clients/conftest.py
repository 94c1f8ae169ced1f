from __future__ import annotations

from collections.abc import Iterator

import pytest
from client_helpers import echo_app

from servers import run_wsgi


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    """A loopback echo service (see ``client_helpers.echo_app``)."""
    with run_wsgi(echo_app) as url:
        yield url
