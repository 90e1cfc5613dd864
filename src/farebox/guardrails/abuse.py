"""TokenFence's abuse patterns: prompt stuffing, batch abuse and context exploitation.

- **Prompt stuffing** (``stuffing_hit``): a long prompt padded with repeated text compresses
  far better than prose, code or data written for a reason. The check compresses the raw
  UTF-8 bytes with zlib and compares ``raw / compressed`` with the plan's
  ``stuffing_ratio`` (ordinary English prose: 2 to 3.5; a paragraph repeated: 20 and
  more). Only texts of at least ``stuffing_min_chars`` characters are judged. The cost is
  bounded whatever the size: a text longer than one window (``SAMPLE_CHARS // SAMPLES``
  characters, 8 Ki) is judged on ``SAMPLES`` evenly spread windows (the first and the
  last included) and the most repetitive one decides, so a 4 MB prompt costs what a
  32 KiB one does.
- **Context exploitation** (``context_hit``): a request whose input fills at least
  ``context_max_fraction`` of the model's context window. The window is the deployment's
  ``context_window`` (``models: {alias: [{provider, model, context_window}]}``, on the
  routing ``Target``); unknown (None): no check.
- **Batch abuse** (``BatchWatch``): a burst of near-identical requests from one end user.
  Near-identical: a Jaccard similarity of at least ``SIMILAR`` between the texts' word
  3-shingles (after case folding, whitespace collapsing and every digit read as ``0``, so
  a template filled with numbers is one text), estimated by a bottom-``SKETCH`` MinHash
  sketch. Each (tenant, user) keeps at most ``CLUSTERS`` recent clusters of such texts,
  each with the times of its last ``batch_max + 1`` requests; the users are an LRU of at
  most ``USERS``. A request costs one sketch (on at most ``FINGERPRINT_CHARS`` characters)
  and at most ``CLUSTERS`` set intersections. Embedded (memory, SQLite), the watch is per
  process: with several workers each counts its own share of a burst. Scaled out
  (PostgreSQL plus Redis: the store's ``bursts``, ``stores.redis.bursts``), the clusters are
  kept in Redis, in one hash per tenant expiring with the window, and a request is matched
  and counted by one script call, so a burst spread over workers and replicas is seen whole;
  its sketch then hashes with CRC-32 (the same in every process) instead of the process's
  own string hash. The end user may be the body's ``user`` (the client's to choose: a new
  one per request), so Redis keeps at most ``shared_users`` end users per tenant, the least
  recently seen forgotten first (as in process): about ``SHARED_BYTES`` per tenant at most,
  and a client rotating ``user`` only evicts its own tenant's quietest users. When Redis
  does not answer, that request is counted in process. ``batch_max`` is at most 1,000 and
  ``batch_window_s`` at most 3,600 (``config.guardrails``), so one script call handles at
  most ``CLUSTERS * (SKETCH + 1001)`` numbers.

Findings carry the category and a score, never the text.
"""

from __future__ import annotations

import heapq
import re
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from farebox.core.guardrails import AbusePolicy, Hit
from farebox.stores.bursts import BurstRule, BurstStore

DETECTOR = "abuse"
STUFFING = "prompt_stuffing"
BATCH = "batch_abuse"
CONTEXT = "context_exploitation"

SAMPLE_CHARS = 32 * 1024  # at most this many characters are compressed per text
SAMPLES = 4  # windows a longer text is judged on
FINGERPRINT_CHARS = 4096  # a batch fingerprint reads at most this much of the text (a template)
SKETCH = 64  # MinHash values kept per text (bottom-k)
SIMILAR = 0.8  # estimated Jaccard similarity from which two texts are near-identical
CLUSTERS = 8  # near-identical groups remembered per (tenant, user)
USERS = 50_000  # (tenant, user) pairs remembered per process, least recently seen evicted
SHARED_BYTES = 16 * 2**20  # what the shared count keeps in Redis per tenant, at most about
_WORDS = re.compile(r"\w+")
_DIGITS = re.compile(r"\d+")


# prompt stuffing -----------------------------------------------------------------------
def _sample(text: str) -> list[str]:
    """``text`` itself when it fits one window, else ``SAMPLES`` evenly spread windows."""
    size = SAMPLE_CHARS // SAMPLES
    if len(text) <= size:
        return [text]
    step = (len(text) - size) / (SAMPLES - 1)
    return [text[int(i * step) : int(i * step) + size] for i in range(SAMPLES)]


def _ratio(part: str) -> float:
    data = part.encode("utf-8", "surrogatepass")  # lone surrogates: their escaped bytes
    return len(data) / len(zlib.compress(data, 6)) if data else 0.0


def compression_ratio(text: str) -> float:
    """Raw UTF-8 bytes over zlib-compressed bytes: of ``text`` when it fits one window of
    ``SAMPLE_CHARS // SAMPLES`` characters, else the largest of ``SAMPLES`` windows' (a
    padded stretch anywhere in a huge prompt is found, at a bounded cost)."""
    return max(_ratio(part) for part in _sample(text))


def stuffing_hit(text: str, policy: AbusePolicy) -> Hit | None:
    """Prompt stuffing: repetitive padding (a compression-ratio check). The score is 0.5 at
    the plan's ratio and 1.0 at twice it."""
    if len(text) < max(policy.stuffing_min_chars, 1):
        return None
    ratio = compression_ratio(text)
    if ratio < policy.stuffing_ratio:
        return None
    score = min(1.0, 0.5 * ratio / max(policy.stuffing_ratio, 1e-9))
    return Hit(DETECTOR, STUFFING, score, 0, 0)


# context exploitation ------------------------------------------------------------------
def context_hit(input_tokens: int, context_window: int | None, policy: AbusePolicy) -> Hit | None:
    """Context exploitation: a request that fills at least ``context_max_fraction`` of the
    model's context window; ``context_window`` None (not configured): no check."""
    if context_window is None or context_window <= 0 or input_tokens <= 0:
        return None
    fill = input_tokens / context_window
    if fill < policy.context_max_fraction:
        return None
    return Hit(DETECTOR, CONTEXT, min(1.0, fill), 0, 0)


def context_window_of(windows: Sequence[int | None]) -> int | None:
    """The context window a request to an alias can count on: the smallest declared among
    its deployments (it may land on any), None when none declares one."""
    known = [w for w in windows if w]
    return min(known) if known else None


# batch abuse ---------------------------------------------------------------------------
def sketch(text: str) -> frozenset[int]:
    """The bottom-``SKETCH`` MinHash sketch of ``text``'s normalised word 3-shingles (the
    process's own string hash: sketches compare within one process only)."""
    words = _WORDS.findall(_DIGITS.sub("0", text[:FINGERPRINT_CHARS].casefold()))
    if len(words) < 3:
        return frozenset((hash(" ".join(words)),))
    hashes = {hash((words[i], words[i + 1], words[i + 2])) for i in range(len(words) - 2)}
    if len(hashes) <= SKETCH:
        return frozenset(hashes)
    return frozenset(heapq.nsmallest(SKETCH, hashes))


def shared_sketch(text: str) -> list[int]:
    """``sketch``, with CRC-32 for the hash (the same in every process: sketches compare
    across processes and replicas), ascending: what the shared burst store keeps."""
    words = _WORDS.findall(_DIGITS.sub("0", text[:FINGERPRINT_CHARS].casefold()))
    if len(words) < 3:
        return [zlib.crc32(" ".join(words).encode("utf-8", "surrogatepass"))]
    shingles = {" ".join(words[i : i + 3]) for i in range(len(words) - 2)}
    hashes = {zlib.crc32(s.encode("utf-8", "surrogatepass")) for s in shingles}
    return sorted(hashes) if len(hashes) <= SKETCH else heapq.nsmallest(SKETCH, hashes)


def similarity(a: frozenset[int], b: frozenset[int]) -> float:
    """The bottom-k estimate of the Jaccard similarity of the shingle sets behind ``a`` and
    ``b``: of the ``k`` smallest hashes of their union, the share both hold."""
    if a == b:
        return 1.0
    k = min(SKETCH, len(a | b))
    union = heapq.nsmallest(k, a | b)
    both = a & b
    return sum(1 for h in union if h in both) / k if k else 0.0


def shared_users(keep: int) -> int:
    """End users the shared count keeps per tenant: as many as fit in ``SHARED_BYTES`` when
    each holds the most it can (``CLUSTERS`` clusters of ``SKETCH`` values and ``keep``
    times, 9 bytes a number in MessagePack), between 100 and 10,000 (2,741 with the
    defaults, 218 at ``batch_max: 1000``)."""
    return max(100, min(10_000, SHARED_BYTES // (CLUSTERS * (SKETCH + keep) * 9)))


@dataclass(slots=True)
class _Cluster:
    sketch: frozenset[int]
    times: deque[float] = field(default_factory=deque)


class BatchWatch:
    """A burst of near-identical requests from one end user (per process, bounded memory;
    with ``shared``, the scaled store's, in every process at once: see the module
    docstring)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        users: int = USERS,
        shared: BurstStore | None = None,
    ) -> None:
        self._clock = clock
        self._users_max = users
        self._users: OrderedDict[tuple[str, str], list[_Cluster]] = OrderedDict()
        self._shared = shared

    def __len__(self) -> int:
        return len(self._users)

    @property
    def shared(self) -> bool:
        return self._shared is not None

    async def check(self, tenant: str, user: str, text: str, policy: AbusePolicy) -> Hit | None:
        """``hit``, counted in the shared store when there is one (one round trip), else (or
        when it does not answer) in this process."""
        if self._shared is None:
            return self.hit(tenant, user, text, policy)
        keep = policy.batch_max + 1  # only "more than batch_max" matters
        rule = BurstRule(policy.batch_window_s, keep, SIMILAR, CLUSTERS, SKETCH, shared_users(keep))
        count = await self._shared.count(tenant, user, shared_sketch(text), self._clock(), rule)
        if count is None:
            return self.hit(tenant, user, text, policy)
        return Hit(DETECTOR, BATCH, 1.0, 0, 0) if count > policy.batch_max else None

    def hit(self, tenant: str, user: str, text: str, policy: AbusePolicy) -> Hit | None:
        """Count this request; a Hit when its end user sent more than ``batch_max``
        near-identical requests in the last ``batch_window_s`` seconds, this one included."""
        now = self._clock()
        mine = sketch(text)
        clusters = self._clusters((tenant, user))
        cluster = self._matching(clusters, mine)
        times = cluster.times
        since = now - policy.batch_window_s
        while times and times[0] <= since:
            times.popleft()
        times.append(now)
        while len(times) > policy.batch_max + 1:  # only "more than batch_max" matters
            times.popleft()
        if len(times) <= policy.batch_max:
            return None
        return Hit(DETECTOR, BATCH, 1.0, 0, 0)

    def _clusters(self, who: tuple[str, str]) -> list[_Cluster]:
        clusters = self._users.get(who)
        if clusters is None:
            clusters = self._users[who] = []
            while len(self._users) > self._users_max:
                self._users.popitem(last=False)
        else:
            self._users.move_to_end(who)
        return clusters

    @staticmethod
    def _matching(clusters: list[_Cluster], mine: frozenset[int]) -> _Cluster:
        """The cluster ``mine`` belongs to (moved to the front), or a new one; the least
        recently matched cluster leaves when there are ``CLUSTERS``."""
        for i, cluster in enumerate(clusters):
            if similarity(cluster.sketch, mine) >= SIMILAR:
                if i:
                    clusters.insert(0, clusters.pop(i))
                return cluster
        cluster = _Cluster(mine)
        clusters.insert(0, cluster)
        del clusters[CLUSTERS:]
        return cluster
