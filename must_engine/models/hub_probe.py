"""Is the Hugging Face Hub reachable? Asked once, quickly, before any download.

Offline, huggingface_hub retries each download with back-off (1+2+4+8+8 s) before it gives
up: an uncached model took 51 s to fail that way (two files), 0.6 s with this probe first
(measured with prefetch_weights of ViT-B-32 laion2b_s34b_b79k, no DNS, empty cache).
When the probe fails, downloads go to the local cache only (``local_files_only``): a cached
model still loads, an uncached one fails at once with the clear offline message.
"""

from __future__ import annotations

import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field

PROBE_TIMEOUT_S = 3.0


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def endpoint_answers(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether an HTTP server answers at url within timeout_s, through the proxies the
    environment names (as huggingface_hub would go). Any HTTP status counts as an answer;
    no DNS, a refused or timed-out connection, or a proxy refusing the tunnel does not."""
    answered: list[bool] = []

    def ask() -> None:
        request = urllib.request.Request(url, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s):
                answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)  # the server is there; it just did not like the request
        except urllib.error.URLError as exc:
            # A certificate this Python's store does not know still means a server answered;
            # huggingface_hub (with its own certificates) decides whether it can use it.
            answered.append(isinstance(exc.reason, ssl.SSLError))
        except (OSError, ValueError):
            answered.append(False)

    # Name resolution ignores socket timeouts and can hang for many seconds without DNS: ask
    # on a daemon thread and stop waiting at the deadline.
    worker = threading.Thread(target=ask, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout_s + 0.5)
    return bool(answered and answered[0])


@dataclass
class HubProbe:
    """Asks at most once per model load whether the Hub answers (HF_HUB_OFFLINE: never)."""

    endpoint: str = field(default_factory=_hub_endpoint)
    timeout_s: float = PROBE_TIMEOUT_S
    _answer: bool | None = field(default=None, init=False, repr=False)

    def reachable(self) -> bool:
        if self._answer is None:
            self._answer = not _hub_offline() and endpoint_answers(self.endpoint, self.timeout_s)
        return self._answer
