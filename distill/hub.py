"""The one place that asks whether the Hugging Face hub can be reached (teachers and corpora both use it).

Only a named Hugging Face id may touch the network. When the hub cannot be reached, loading fails
within seconds: a 3 s connection probe, no retry loop.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlparse

_PROBE_TIMEOUT_S = 3.0


def hub_reachable() -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    reached: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((url.hostname, port), timeout=_PROBE_TIMEOUT_S).close()
            reached.append(True)
        except OSError:
            reached.append(False)

    # The socket timeout does not bound the DNS lookup, which can take 10 s or more with an
    # unreachable resolver: wait for the probe in a daemon thread for the timeout at most.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_PROBE_TIMEOUT_S)
    return bool(reached and reached[0])
