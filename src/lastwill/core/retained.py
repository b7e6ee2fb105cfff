"""Retained messages: one per topic; replaced by a newer one, cleared by an empty payload.

Kept twice: by topic (a dict, for replacing and clearing) and in a tree of topic levels, so that a
SUBSCRIBE finds the retained messages matching its filter by walking the levels the filter names
instead of testing every stored topic (with a million retained messages a SUBSCRIBE to one topic
took ~0.3 s that way, docs/benchmarks.md "Scaling curves").
"""

from __future__ import annotations

from .message import Message


class _Level:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _Level] | None = None  # created with the first child
        self.message: Message | None = None


class RetainedStore:
    __slots__ = ("_by_topic", "_root", "nbytes")

    def __init__(self) -> None:
        self._by_topic: dict[str, Message] = {}
        self._root = _Level()
        self.nbytes = 0  # topics + payloads of the messages held (max_retained_bytes)

    def _take(self, message: Message) -> None:
        self.nbytes -= len(message.payload) + len(message.topic)

    def __len__(self) -> int:
        return len(self._by_topic)

    def get(self, topic: str) -> Message | None:
        return self._by_topic.get(topic)

    def store(self, message: Message) -> bool:
        """Store or clear; returns True if something changed."""
        if not message.payload:
            # [MQTT-3.3.1-6] an empty payload removes the retained message, and
            # [MQTT-3.3.1-7] is itself never stored
            old = self._by_topic.pop(message.topic, None)
            if old is None:
                return False
            self._take(old)
            self._unlink(message.topic)
            return True
        topic = message.topic
        old = self._by_topic.get(topic)
        if old is not None:
            self._take(old)
        self.nbytes += len(message.payload) + len(topic)
        self._by_topic[topic] = message  # [MQTT-3.3.1-5] replace any existing one
        node = self._root
        for name in topic.split("/"):
            children = node.children
            if children is None:
                children = node.children = {}
            child = children.get(name)
            if child is None:
                child = children[name] = _Level()
            node = child
        node.message = message
        return True

    def remove_if(self, topic: str, message: Message) -> bool:
        """Remove ``topic`` only if it still holds ``message`` (used by expiry timers)."""
        if self._by_topic.get(topic) is message:
            del self._by_topic[topic]
            self._take(message)
            self._unlink(topic)
            return True
        return False

    def _unlink(self, topic: str) -> None:
        """Take ``topic``'s message out of the tree, and the levels that no longer lead anywhere."""
        path = [self._root]
        names = topic.split("/")
        for name in names:
            children = path[-1].children
            child = children.get(name) if children is not None else None
            if child is None:
                return
            path.append(child)
        path[-1].message = None
        for depth in range(len(names), 0, -1):
            node = path[depth]
            if node.message is not None or node.children:
                break
            del path[depth - 1].children[names[depth - 1]]

    def matching(self, topic_filter: str, now: float) -> list[Message]:
        """The retained messages whose topics match ``topic_filter`` (expired ones are dropped)."""
        found: list[Message] = []
        _collect(self._root, topic_filter.split("/"), 0, found)
        out = []
        for msg in found:
            if msg.expired(now):  # [MQTT-3.3.2-5] an expired message is not delivered
                if self._by_topic.get(msg.topic) is msg:
                    del self._by_topic[msg.topic]
                    self._take(msg)
                    self._unlink(msg.topic)
            else:
                out.append(msg)
        return out

    def find(self, topic_filter: str) -> list[Message]:
        """The retained messages whose topics match ``topic_filter``, expired ones included; changes
        nothing (the admin API's listing)."""
        found: list[Message] = []
        _collect(self._root, topic_filter.split("/"), 0, found)
        return found

    def items(self):
        return self._by_topic.items()


def _collect(node: _Level, levels: list[str], i: int, out: list[Message]) -> None:
    if i == len(levels):
        if node.message is not None:
            out.append(node.message)
        return
    name = levels[i]
    children = node.children
    if name == "#":
        # [MQTT-4.7.1-2] '#' matches the parent level too ("a/#" matches "a") and every level below
        if node.message is not None and i > 0:
            out.append(node.message)
        if children:
            for child_name, child in children.items():
                if i == 0 and child_name[:1] == "$":  # [MQTT-4.7.2-1] not matched by a leading wildcard
                    continue
                _everything_below(child, out)
    elif name == "+":
        if children:
            for child_name, child in children.items():
                if i == 0 and child_name[:1] == "$":  # [MQTT-4.7.2-1]
                    continue
                _collect(child, levels, i + 1, out)
    elif children:
        child = children.get(name)
        if child is not None:
            _collect(child, levels, i + 1, out)


def _everything_below(node: _Level, out: list[Message]) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if n.message is not None:
            out.append(n.message)
        if n.children:
            stack.extend(n.children.values())
