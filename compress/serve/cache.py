"""The one cache policy: every cache the library keeps is an LRU with a bound, named in REGISTRY (README lists
them). Entries are whole models or decompositions, so bounds are counts, small on purpose."""
import hashlib
import threading
from collections import OrderedDict

REGISTRY: dict = {}  # name -> the LRU


class LRU:
    def __init__(self, name: str, max_entries: int, holds: str):
        self.name, self.max_entries, self.holds = name, max_entries, holds
        self._d, self._lock = OrderedDict(), threading.Lock()
        REGISTRY[name] = self

    def get_or_make(self, key, make):
        """The cached value, or make() stored (made outside the lock: two makers of one key both run, one wins)."""
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        value = make()
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.max_entries:
                self._d.popitem(last=False)
            return self._d[key]

    def __contains__(self, key):
        return key in self._d

    def __len__(self):
        return len(self._d)

    def clear(self):
        with self._lock:
            self._d.clear()


def content_key(t) -> tuple:
    """A key for a CPU tensor's content: the sha256 of its bytes and its shape (a fit of the same table is the same)."""
    return hashlib.sha256(t.numpy().tobytes()).hexdigest(), tuple(t.shape)


def policy() -> list[dict]:
    """Every library cache with its bound, for README and the tests."""
    return [{"cache": c.name, "max entries": c.max_entries, "holds": c.holds} for c in REGISTRY.values()]
