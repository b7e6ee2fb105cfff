"""A store that keeps everything in this process (``--memory``): nothing survives a restart.

It applies batches exactly as the SQLite store does, so the contract tests hold for both.
"""

from __future__ import annotations

import copy

from .base import TIMELINE_PER_CLIENT, Batch, StoredState


class MemoryStorage:
    def __init__(self) -> None:
        self._state = StoredState()
        self.commits = 0

    def load(self) -> StoredState:
        return copy.deepcopy(self._state)

    def commit(self, batch: Batch) -> None:
        state = self._state
        for client_id in batch.sessions_deleted:
            state.sessions.pop(client_id, None)
            state.deliveries.pop(client_id, None)
        for client_id, s in batch.sessions.items():
            state.sessions[client_id] = copy.deepcopy(s)
        deleted = batch.deliveries_deleted
        if deleted:
            for client_id in {c for c, _ in deleted}:
                kept = [d for d in state.deliveries.get(client_id, []) if (client_id, d.seq) not in deleted]
                if kept:
                    state.deliveries[client_id] = kept
                else:
                    state.deliveries.pop(client_id, None)
        for (client_id, seq), d in batch.deliveries.items():
            items = state.deliveries.setdefault(client_id, [])
            for i, old in enumerate(items):
                if old.seq == seq:
                    items[i] = copy.deepcopy(d)
                    break
            else:
                items.append(copy.deepcopy(d))
                items.sort(key=lambda x: x.seq)
        for topic in batch.retained_deleted:
            state.retained.pop(topic, None)
        for topic, m in batch.retained.items():
            state.retained[topic] = copy.deepcopy(m)
        for client_id in batch.timeline_deleted:
            state.timeline.pop(client_id, None)
        touched = set()
        for (client_id, _seq), e in batch.timeline.items():
            state.timeline.setdefault(client_id, []).append(copy.deepcopy(e))
            touched.add(client_id)
        if batch.timeline_dropped:  # after the additions: an event may be added and dropped in one batch
            dropped = batch.timeline_dropped
            for client_id, events in list(state.timeline.items()):
                kept = [e for e in events if e.seq not in dropped]
                if len(kept) != len(events):
                    if kept:
                        state.timeline[client_id] = kept
                    else:
                        del state.timeline[client_id]
                        touched.discard(client_id)
        for client_id in touched:
            events = sorted({e.seq: e for e in state.timeline[client_id]}.values(), key=lambda e: e.seq)
            state.timeline[client_id] = events[-TIMELINE_PER_CLIENT:]
        state.meta.update(batch.meta)
        self.commits += 1

    def close(self) -> None:
        pass
