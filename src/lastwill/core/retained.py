"""Retained messages: one per topic; replaced by a newer one, cleared by an empty payload."""

from __future__ import annotations

from .message import Message
from .topics import topic_matches


class RetainedStore:
    __slots__ = ("_by_topic",)

    def __init__(self) -> None:
        self._by_topic: dict[str, Message] = {}

    def __len__(self) -> int:
        return len(self._by_topic)

    def get(self, topic: str) -> Message | None:
        return self._by_topic.get(topic)

    def store(self, message: Message) -> bool:
        """Store or clear; returns True if something changed."""
        if not message.payload:
            # [MQTT-3.3.1-6] an empty payload removes the retained message, and
            # [MQTT-3.3.1-7] is itself never stored
            return self._by_topic.pop(message.topic, None) is not None
        self._by_topic[message.topic] = message  # [MQTT-3.3.1-5] replace any existing one
        return True

    def remove_if(self, topic: str, message: Message) -> bool:
        """Remove ``topic`` only if it still holds ``message`` (used by expiry timers)."""
        if self._by_topic.get(topic) is message:
            del self._by_topic[topic]
            return True
        return False

    def matching(self, topic_filter: str, now: float) -> list[Message]:
        out = []
        expired = []
        for topic, msg in self._by_topic.items():
            if topic_matches(topic_filter, topic):
                if msg.expired(now):
                    expired.append(topic)
                else:
                    out.append(msg)
        for topic in expired:
            del self._by_topic[topic]
        return out

    def items(self):
        return self._by_topic.items()
