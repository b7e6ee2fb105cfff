"""Which clients changed, for a live view (the admin API's dashboard): a change feed that costs
nothing while nobody watches.

``changed`` is None until the edge calls ``watch()`` (a dashboard connected) and again after
``unwatch()``. While it is a dict, the parts of the core that change what a client looks like from
outside note the client id in it: a connection accepted or ended (core/announce.py: with how it
ended), a will decision (core/timeline.py: every decision is an event), a session's end
(core/ownership.py). The edge takes the ids (``take``) and reads each client's state again through
``BrokerView``: the feed carries which clients changed, never a copy of the state.
"""

from __future__ import annotations

from .causes import ConnectionEnded


class ChangeFeed:
    __slots__ = ("changed",)

    def __init__(self) -> None:
        # client id -> how its last connection ended (None: something else changed); None: nobody watches
        self.changed: dict[str, ConnectionEnded | None] | None = None

    def watch(self) -> None:
        if self.changed is None:
            self.changed = {}

    def unwatch(self) -> None:
        self.changed = None

    @property
    def watched(self) -> bool:
        return self.changed is not None

    def take(self) -> dict[str, ConnectionEnded | None]:
        """The clients that changed since the last call (and how those that disconnected ended)."""
        changed = self.changed
        if not changed:
            return {}
        self.changed = {}
        return changed
