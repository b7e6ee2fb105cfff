"""A store that keeps everything in this process (``--memory``): nothing survives a restart.

It applies batches exactly as the SQLite store does, so the contract tests hold for both: a
message is kept once, however many deliveries refer to it (by ``StoredMessage.msg_id``), until the
batch that deletes it; a delivery is deleted exactly (a queue head is only a hint, see base.Batch).
"""

from __future__ import annotations

import copy

from .base import ACK_STATES, TIMELINE_PER_CLIENT, Batch, StoredDelivery, StoredMessage, StoredState


class MemoryStorage:
    def __init__(self) -> None:
        # deliveries in _state.deliveries hold their message's msg_id in place of the message, which
        # is in _messages (once)
        self._state = StoredState()
        self._messages: dict[int, StoredMessage] = {}
        self._next_id = 1
        self.commits = 0

    def load(self) -> StoredState:
        state = copy.deepcopy(self._state)
        messages = copy.deepcopy(self._messages)
        used = set()
        for items in state.deliveries.values():
            for d in items:
                used.add(d.message)
                d.message = messages[d.message]
        state.next_message_id = self._next_id
        state.unreferenced_messages = set(messages) - used
        return state

    def commit(self, batch: Batch) -> None:
        state = self._state
        for client_id in batch.sessions_deleted:
            state.sessions.pop(client_id, None)
            state.deliveries.pop(client_id, None)
        for client_id, s in batch.sessions.items():
            state.sessions[client_id] = copy.deepcopy(s)
        for mid, m in batch.messages.items():
            self._messages[mid] = copy.deepcopy(m)
            self._next_id = max(self._next_id, mid + 1)
        queued = [StoredDelivery(cid, seq, self._messages[mid], flags & 3, bool(flags & 4), tuple(sub_ids),
                                 pid if flags >> 3 else None, ACK_STATES[flags >> 3])
                  for mid, columns in batch.queued.items()
                  for cid, seq, flags, pid, sub_ids in zip(*columns, strict=True)]
        auto: dict[int, int] = {}  # a message without msg_id (a batch made by hand): kept for it alone
        for d in queued:
            self._put(d, auto)
        if batch.sent:  # after the queued ones, before those put one by one (they come later)
            self._sent(batch.sent)
        for d in batch.deliveries.values():
            self._put(d, auto)
        deleted = batch.deliveries_deleted
        if deleted:  # after the puts: a delivery queued in this batch may be done in it too
            for client_id in {c for c, _ in deleted}:
                kept = [d for d in state.deliveries.get(client_id, []) if (client_id, d.seq) not in deleted]
                if kept:
                    state.deliveries[client_id] = kept
                else:
                    state.deliveries.pop(client_id, None)
        for mid in batch.messages_deleted:
            self._messages.pop(mid, None)
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

    def _put(self, d: StoredDelivery, auto: dict[int, int]) -> None:
        client_id, seq = d.client_id, d.seq
        mid = d.message.msg_id
        if not mid:
            mid = auto.get(id(d.message))
            if mid is None:
                mid = auto[id(d.message)] = self._next_id
                self._next_id += 1
                self._messages[mid] = copy.deepcopy(d.message)
        elif mid >= self._next_id:
            self._next_id = mid + 1
        kept = StoredDelivery(d.client_id, d.seq, mid, d.qos, d.retain, tuple(d.subscription_ids),  # type: ignore[arg-type]
                              d.packet_id, d.state)
        items = self._state.deliveries.setdefault(client_id, [])
        if not items or items[-1].seq < seq:
            items.append(kept)
            return
        for i, old in enumerate(items):
            if old.seq == seq:
                items[i] = kept
                break
        else:
            items.append(kept)
            items.sort(key=lambda x: x.seq)

    def _sent(self, sent: dict[str, list[tuple]]) -> None:
        """Queued deliveries gone in flight: their packet id and state (``Batch.sent``)."""
        for client_id, items in sent.items():
            stored = self._state.deliveries.get(client_id, [])
            at = {d.seq: i for i, d in enumerate(stored)}
            for seq, _mid, flags, pid, _ids in items:
                i = at.get(seq)
                if i is not None:
                    d = stored[i]
                    stored[i] = StoredDelivery(client_id, seq, d.message, d.qos, d.retain, d.subscription_ids, pid,
                                               ACK_STATES[flags >> 3])

    def close(self) -> None:
        pass
