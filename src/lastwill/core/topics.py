"""Topic names, topic filters and the subscription trie.

Wildcards: ``+`` matches one level, ``#`` matches the rest (including the parent level). Topics
starting with ``$`` are not matched by a filter whose first level is a wildcard [MQTT-4.7.2-1].
Shared subscriptions (``$share/{group}/{filter}``) are stored in the same trie, under the filter,
as groups of members; the router picks one member per group.
"""

from __future__ import annotations

from dataclasses import dataclass

SHARE_PREFIX = "$share/"
MAX_TOPIC_BYTES = 65535


class TopicError(ValueError):
    def __init__(self, message: str, rule: str | None = None):
        super().__init__(message)
        self.rule = rule


def validate_topic_name(topic: str) -> None:
    """A Topic Name (in PUBLISH or a Will) has no wildcards and is at least one character."""
    if not topic:
        raise TopicError("topic name is empty", "MQTT-4.7.3-1")  # [MQTT-4.7.3-1]
    if "+" in topic or "#" in topic:
        raise TopicError(f"topic name {topic!r} contains a wildcard", "MQTT-3.3.2-2")  # [MQTT-3.3.2-2]
    if "\x00" in topic:
        raise TopicError("topic name contains U+0000", "MQTT-4.7.3-2")  # [MQTT-4.7.3-2]


def validate_topic_filter(topic_filter: str) -> None:
    """Check wildcard placement (4.7.1) and length [MQTT-4.7.3-1]."""
    if not topic_filter:
        raise TopicError("topic filter is empty", "MQTT-4.7.3-1")  # [MQTT-4.7.3-1]
    if "\x00" in topic_filter:
        raise TopicError("topic filter contains U+0000", "MQTT-4.7.3-2")  # [MQTT-4.7.3-2]
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level:
            if level != "#" or i != last:
                # '#' alone in its level and the last character of the filter: 3.1.1 [MQTT-4.7.1-2],
                # 5.0 [MQTT-4.7.1-1]
                raise TopicError(f"topic filter {topic_filter!r}: '#' must be last and alone in its level",
                                 "MQTT-4.7.1-2")
        elif "+" in level and level != "+":
            # '+' must occupy an entire level: 3.1.1 [MQTT-4.7.1-3], 5.0 [MQTT-4.7.1-2]
            raise TopicError(f"topic filter {topic_filter!r}: '+' must occupy a whole level", "MQTT-4.7.1-3")


def parse_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split ``$share/group/filter`` into (group, filter); (None, filter) for a normal filter."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None, topic_filter
    rest = topic_filter[len(SHARE_PREFIX):]
    group, sep, inner = rest.partition("/")
    if not sep or not group or not inner:
        # [MQTT-4.8.2-1] a ShareName of at least one character, then '/', then a Topic Filter
        raise TopicError(f"shared subscription {topic_filter!r} needs $share/<group>/<filter>", "MQTT-4.8.2-1")
    if "+" in group or "#" in group:
        # [MQTT-4.8.2-2] the ShareName must not contain '/', '+' or '#'
        raise TopicError(f"share name {group!r} contains a wildcard", "MQTT-4.8.2-2")
    validate_topic_filter(inner)
    return group, inner


def validate_filter(topic_filter: str) -> tuple[str | None, str]:
    """The one check of a Topic Filter as SUBSCRIBE and UNSUBSCRIBE carry it, shared subscriptions
    included: (group, filter) as ``parse_shared`` splits it; raises TopicError (with the rule broken)
    for an invalid one. SUBSCRIBE answers it with 0x8F (3.1.1: 0x80), UNSUBSCRIBE with 0x8F (3.1.1:
    the connection is closed [MQTT-4.8.0-1], its UNSUBACK having no reason codes)."""
    group, inner = parse_shared(topic_filter)
    if group is None:  # (parse_shared checked a shared subscription's filter)
        validate_topic_filter(inner)
    return group, inner


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True if ``topic`` matches ``topic_filter`` (a plain filter, not $share)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


@dataclass(slots=True)
class SubOptions:
    """A session's subscription to one filter (3.8.3.1), with its Subscription Identifier."""

    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    subscription_id: int | None = None


class _Node:
    __slots__ = ("children", "subscribers", "shared")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subscribers: dict[str, SubOptions] = {}  # client_id -> options
        self.shared: dict[str, dict[str, SubOptions]] = {}  # group -> client_id -> options

    def empty(self) -> bool:
        return not (self.children or self.subscribers or self.shared)


class SubscriptionTree:
    """The trie of all subscriptions. ``match`` returns what a PUBLISH to a topic reaches."""

    __slots__ = ("_root", "_count", "_cache")

    def __init__(self) -> None:
        self._root = _Node()
        self._count = 0
        # topic -> (normal matches, shared matches); cleared on every change of the tree
        self._cache: dict[str, tuple[list[tuple[str, SubOptions]], list[tuple[str, str, dict[str, SubOptions]]]]] = {}

    def __len__(self) -> int:
        return self._count

    def has_child(self, first_level: str) -> bool:
        """True if some subscription (plain or shared) starts with ``first_level`` literally: for a
        ``$`` level, whether any PUBLISH under it can reach anyone [MQTT-4.7.2-1]."""
        return first_level in self._root.children

    def add(self, client_id: str, topic_filter: str, options: SubOptions) -> bool:
        """Add or replace; returns True if the subscription did not exist before."""
        group, inner = parse_shared(topic_filter)
        node = self._root
        for level in inner.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if group is None:
            table = node.subscribers
        else:
            table = node.shared.setdefault(group, {})
        new = client_id not in table
        table[client_id] = options
        if new:
            self._count += 1
        self._cache.clear()
        return new

    def remove(self, client_id: str, topic_filter: str) -> bool:
        group, inner = parse_shared(topic_filter)
        path = [self._root]
        node = self._root
        levels = inner.split("/")
        for level in levels:
            node = node.children.get(level)
            if node is None:
                return False
            path.append(node)
        if group is None:
            removed = node.subscribers.pop(client_id, None) is not None
        else:
            members = node.shared.get(group)
            removed = bool(members) and members.pop(client_id, None) is not None
            if members is not None and not members:
                del node.shared[group]
        if not removed:
            return False
        self._count -= 1
        self._cache.clear()
        for i in range(len(levels), 0, -1):  # prune empty nodes
            if path[i].empty():
                del path[i - 1].children[levels[i - 1]]
            else:
                break
        return True

    def match(self, topic: str):
        """Return (normal, shared) for ``topic``.

        normal: list of (client_id, SubOptions), one entry per matching subscription (a client
        with overlapping subscriptions appears several times; the router merges them).
        shared: list of (share key "group/filter", group, members dict).
        """
        hit = self._cache.get(topic)
        if hit is not None:
            return hit
        normal: list = []
        shared: list = []
        levels = topic.split("/")
        dollar = topic.startswith("$")
        self._walk(self._root, levels, 0, normal, shared, dollar, [])
        result = (normal, shared)
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[topic] = result
        return result

    def _walk(self, node: _Node, levels: list[str], i: int, normal: list, shared: list, dollar: bool,
              path: list[str]) -> None:
        if i == len(levels):
            self._collect(node, normal, shared, path)
            hash_node = node.children.get("#")  # "a/#" matches "a" too
            if hash_node is not None:
                self._collect(hash_node, normal, shared, path + ["#"])
            return
        wild_ok = not (dollar and i == 0)  # [MQTT-4.7.2-1]
        if wild_ok:
            hash_node = node.children.get("#")
            if hash_node is not None:
                self._collect(hash_node, normal, shared, path + ["#"])
            plus = node.children.get("+")
            if plus is not None:
                self._walk(plus, levels, i + 1, normal, shared, dollar, path + ["+"])
        child = node.children.get(levels[i])
        if child is not None:
            self._walk(child, levels, i + 1, normal, shared, dollar, path + [levels[i]])

    @staticmethod
    def _collect(node: _Node, normal: list, shared: list, path: list[str]) -> None:
        if node.subscribers:
            normal.extend(node.subscribers.items())
        if node.shared:
            filt = "/".join(path)
            for group, members in node.shared.items():
                shared.append((f"{group}/{filt}", group, members))
