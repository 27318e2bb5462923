"""Reading and editing `.sops.yaml` as text, so that its comments, order and anchors survive.

PyYAML cannot write a document back with its comments, so this module reads the positions of the parts it
needs from PyYAML's event stream (the `keys:` list of named recipients, and the age list of the single key
group of the rule that covers the secrets file), edits the text at those positions, and checks the result
with PyYAML before anyone writes it: it must parse, the rule must still have exactly one key group, and that
group must hold exactly the recipients that were meant.

A host's recipient is recorded as sops users write it, as a YAML anchor named after the host:

    keys:
      - &admin age1...
      - &desk age1...          <- record_recipient("desk", ...)
    creation_rules:
      - path_regex: secrets/tailscale\\.yaml$
        key_groups:
          - age:
              - *admin
              - *desk          <- and its alias in the key group
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

_ANCHOR_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_AGE_RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
_BLOCK_ITEM_PREFIX = re.compile(r"^\s*-\s+$")


class SopsConfigError(ValueError):
    """A `.sops.yaml` tailnix cannot read or edit safely; the message says what to change."""


@dataclass
class _Node:
    """A YAML node with where it starts and ends in the text (character offsets)."""

    kind: str  # "map", "seq", "scalar" or "alias"
    start: int
    end: int
    anchor: str | None = None
    value: str = ""
    """A scalar's text, or the name an alias refers to."""
    flow: bool = False
    items: list[_Node] = field(default_factory=list)
    pairs: list[tuple[_Node, _Node]] = field(default_factory=list)

    def get(self, key: str) -> _Node | None:
        for name, value in self.pairs:
            if name.kind == "scalar" and name.value == key:
                return value
        return None

    def key_node(self, key: str) -> _Node | None:
        for name, _value in self.pairs:
            if name.kind == "scalar" and name.value == key:
                return name
        return None


def _compose(text: str) -> _Node | None:
    """Build a tree of positioned nodes from PyYAML's events (aliases stay aliases)."""
    stack: list[_Node] = []
    pending_keys: list[_Node | None] = []
    root: _Node | None = None

    def attach(node: _Node) -> None:
        nonlocal root
        if not stack:
            root = node
            return
        parent = stack[-1]
        if parent.kind == "seq":
            parent.items.append(node)
        elif pending_keys[-1] is None:
            pending_keys[-1] = node
        else:
            key = pending_keys[-1]
            pending_keys[-1] = None
            parent.pairs.append((key, node))

    try:
        for event in yaml.parse(text):
            # The pure-Python parser always sets marks; the C one is not used here.
            assert event.start_mark is not None and event.end_mark is not None
            start, end = event.start_mark.index, event.end_mark.index
            if isinstance(event, yaml.ScalarEvent):
                attach(_Node("scalar", start, end, anchor=event.anchor, value=event.value))
            elif isinstance(event, yaml.AliasEvent):
                attach(_Node("alias", start, end, value=str(event.anchor)))
            elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                kind = "seq" if isinstance(event, yaml.SequenceStartEvent) else "map"
                node = _Node(kind, start, end, anchor=event.anchor, flow=bool(event.flow_style))
                attach(node)
                stack.append(node)
                pending_keys.append(None)
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                stack[-1].end = end
                stack.pop()
                pending_keys.pop()
    except yaml.YAMLError as error:
        raise SopsConfigError(f"it is not valid YAML: {error}") from None
    return root


def _anchors(node: _Node, found: dict[str, _Node]) -> dict[str, _Node]:
    if node.anchor is not None:
        found[node.anchor] = node
    for item in node.items:
        _anchors(item, found)
    for key, value in node.pairs:
        _anchors(key, found)
        _anchors(value, found)
    return found


@dataclass(frozen=True)
class Recipient:
    """One age recipient of the key group: its `age1...` value and the anchor it is named by, if any."""

    recipient: str
    name: str | None


class SopsConfig:
    """The text of a `.sops.yaml`, and the rule that covers one secrets file.

    + text: the file's content
    + secrets_path: the secrets file's path relative to the directory holding `.sops.yaml`, as sops
      matches `path_regex` against it
    """

    def __init__(self, text: str, secrets_path: str) -> None:
        self.text = text
        self.secrets_path = secrets_path
        root = _compose(text)
        if root is None or root.kind != "map":
            raise SopsConfigError("it must be a mapping with creation_rules")
        self._root = root
        self._named = _anchors(root, {})
        self._rule = self._covering_rule()
        self._age = self._age_list()

    @classmethod
    def _for_rule(cls, parsed: SopsConfig, secrets_path: str, rule: _Node) -> SopsConfig:
        """The config as `parsed` read it, for a rule already found (no second parse of the text)."""
        config = cls.__new__(cls)
        config.text, config.secrets_path = parsed.text, secrets_path
        config._root, config._named, config._rule = parsed._root, parsed._named, rule
        config._age = config._age_list()
        return config

    @classmethod
    def read(cls, config_file: Path, secrets_file: Path) -> SopsConfig:
        """Read `config_file` and find the rule that covers `secrets_file`."""
        try:
            text = config_file.read_text()
        except OSError as error:
            raise SopsConfigError(f"cannot read {config_file}: {error.strerror}") from None
        try:
            relative = secrets_file.resolve().relative_to(config_file.resolve().parent)
        except ValueError:
            raise SopsConfigError(
                f"{secrets_file} is not under {config_file.parent}, where sops matches path_regex"
            ) from None
        try:
            return cls(text, relative.as_posix())
        except SopsConfigError as error:
            raise SopsConfigError(f"{config_file}: {error}") from None

    def _covering_rule(self) -> _Node:
        rules = self._root.get("creation_rules")
        if rules is None or rules.kind != "seq" or not rules.items:
            raise SopsConfigError("it has no creation_rules")
        for rule in rules.items:
            if rule.kind != "map":
                continue
            regex = rule.get("path_regex")
            # sops uses the first rule that matches; a rule without path_regex matches every file.
            if regex is None or re.search(regex.value, self.secrets_path):
                return rule
        raise SopsConfigError(f"no creation rule's path_regex matches {self.secrets_path}")

    def _age_list(self) -> _Node:
        groups = self._rule.get("key_groups")
        if groups is None:
            raise SopsConfigError(
                f"the rule for {self.secrets_path} has no key_groups; write its recipients as "
                "key_groups: [{age: [...]}] (one group), see the README"
            )
        if groups.kind != "seq" or len(groups.items) != 1:
            count = len(groups.items) if groups.kind == "seq" else 0
            raise SopsConfigError(
                f"the rule for {self.secrets_path} has {count} key groups; it must have exactly one "
                "(with several, a host needs a key from every group and cannot decrypt)"
            )
        group = groups.items[0]
        age = group.get("age") if group.kind == "map" else None
        if age is None or age.kind != "seq":
            raise SopsConfigError(f"the key group for {self.secrets_path} has no list of age recipients")
        return age

    def _resolve(self, item: _Node) -> Recipient:
        if item.kind == "alias":
            target = self._named.get(item.value)
            if target is None or target.kind != "scalar":
                raise SopsConfigError(f"*{item.value} does not name an age recipient")
            return Recipient(target.value, item.value)
        if item.kind != "scalar":
            raise SopsConfigError("an age recipient of the key group is not a plain value")
        return Recipient(item.value, item.anchor)

    def recipients(self) -> list[Recipient]:
        """The age recipients of the key group, in order."""
        return [self._resolve(item) for item in self._age.items]

    def named(self, name: str) -> str | None:
        """The recipient recorded under the anchor `name`, None when there is none."""
        node = self._named.get(name)
        return node.value if node is not None and node.kind == "scalar" else None

    # --- edits: each returns the new text, checked with PyYAML ---------------------------------

    def with_recipient(self, name: str, recipient: str) -> str:
        """The text with `recipient` recorded as `&name` and its alias added to the key group.

        An anchor `name` that already exists gets the new value (a replaced host key).
        """
        _check_name_and_recipient(name, recipient)
        text = self.text
        existing = self._named.get(name)
        in_group = any(
            (item.kind == "alias" and item.value == name) or item is existing for item in self._age.items
        )
        before = self.recipients()
        if existing is not None and existing.kind != "scalar":
            raise SopsConfigError(f"the anchor &{name} does not name an age recipient")
        # Edits go from the end of the text backwards, so that the offsets of earlier parts stay valid.
        if not in_group:
            text = _insert(text, *_append_point(text, self._age, f"*{name}"))
        if existing is not None:
            text = text[: existing.start] + f"&{name} {recipient}" + text[existing.end :]
            wanted = [recipient if r.name == name else r.recipient for r in before]
        else:
            text = _insert(text, *self._anchor_point(text, f"&{name} {recipient}"))
            wanted = [r.recipient for r in before]
        if not in_group:
            wanted.append(recipient)
        self._verify(text, wanted)
        return text

    def without_recipient(self, name: str) -> str:
        """The text without the alias `*name` in the key group, and without the anchor `&name`."""
        items = [item for item in self._age.items if item.kind == "alias" and item.value == name]
        literal = [item for item in self._age.items if item.kind == "scalar" and item.anchor == name]
        anchor = self._named.get(name)
        if anchor is None:
            raise SopsConfigError(f"no recipient is named {name} (no anchor &{name})")
        if literal:
            raise SopsConfigError(
                f"&{name} is defined inside the key group; move it to keys: to remove it by name"
            )
        if len(items) == len(self._age.items):
            raise SopsConfigError(f"{name} is the only recipient; removing it would leave nobody to decrypt")
        other_uses = _count_aliases(self._root, name) - len(items)
        if other_uses:
            raise SopsConfigError(f"*{name} is also used by other rules; remove those uses first")
        edits = [_removal(self.text, self._age, item) for item in items]
        edits.append(_line_removal(self.text, anchor))
        text = self.text
        for start, end in sorted(edits, reverse=True):
            text = text[:start] + text[end:]
        self._verify(text, [r.recipient for r in self.recipients() if r.name != name])
        return text

    def _anchor_point(self, text: str, item: str) -> tuple[int, str]:
        keys = self._root.get("keys")
        rules_key = self._root.key_node("creation_rules")
        assert rules_key is not None
        if keys is None:
            # Anchors must come before their aliases: a new keys: list goes before creation_rules.
            line = text.rfind("\n", 0, rules_key.start) + 1
            return line, f"keys:\n  - {item}\n"
        if keys.kind != "seq":
            raise SopsConfigError("keys: must be a list of recipients")
        if keys.start > rules_key.start:
            raise SopsConfigError(
                "keys: comes after creation_rules; move it above so anchors precede aliases"
            )
        return _append_point(text, keys, item)

    def _verify(self, text: str, wanted: list[str]) -> None:
        try:
            yaml.safe_load(text)
            after = SopsConfig(text, self.secrets_path)
            got = [r.recipient for r in after.recipients()]
        except (yaml.YAMLError, SopsConfigError) as error:
            raise SopsConfigError(f"the edit would break the file ({error}); it was not written") from None
        if got != wanted:
            raise SopsConfigError("the edit did not give the intended key group; the file was not written")


def _check_name_and_recipient(name: str, recipient: str) -> None:
    if not _ANCHOR_NAME.match(name):
        raise SopsConfigError(f"{name!r} cannot be a YAML anchor name (letters, digits, _ . -)")
    if not _AGE_RECIPIENT.match(recipient):
        raise SopsConfigError(f"{recipient!r} is not an age recipient (age1...)")


def _count_aliases(node: _Node, name: str) -> int:
    count = 1 if node.kind == "alias" and node.value == name else 0
    for item in node.items:
        count += _count_aliases(item, name)
    for key, value in node.pairs:
        count += _count_aliases(key, name) + _count_aliases(value, name)
    return count


def _line_bounds(text: str, index: int) -> tuple[int, int]:
    """Start of the line holding `index`, and the start of the next line."""
    start = text.rfind("\n", 0, index) + 1
    newline = text.find("\n", index)
    return start, len(text) if newline < 0 else newline + 1


def _append_point(text: str, sequence: _Node, item: str) -> tuple[int, str]:
    """Where and what to insert to add `item` as the last element of `sequence`."""
    if sequence.flow:
        closing = text.rfind("]", sequence.start, sequence.end)
        before = text[sequence.start + 1 : closing].strip()
        return closing, (", " if before else "") + item
    if not sequence.items:
        raise SopsConfigError("a list to extend is empty")
    first, last = sequence.items[0], sequence.items[-1]
    line_start, _ = _line_bounds(text, first.start)
    prefix = text[line_start : first.start]
    if not _BLOCK_ITEM_PREFIX.match(prefix):
        raise SopsConfigError(
            "a list is laid out in a way tailnix does not edit; write one '- item' per line"
        )
    _, after_last = _line_bounds(text, max(last.end - 1, last.start))
    separator = "" if text[:after_last].endswith("\n") else "\n"
    return after_last, f"{separator}{prefix}{item}\n"


def _insert(text: str, at: int, addition: str) -> str:
    return text[:at] + addition + text[at:]


def _removal(text: str, sequence: _Node, item: _Node) -> tuple[int, int]:
    """The span to delete to remove `item` from `sequence`."""
    if sequence.flow:
        index = sequence.items.index(item)
        if index + 1 < len(sequence.items):
            return item.start, sequence.items[index + 1].start
        previous_end = sequence.items[index - 1].end
        return previous_end, item.end
    return _line_removal(text, item)


def _line_removal(text: str, item: _Node) -> tuple[int, int]:
    start, end = _line_bounds(text, item.start)
    before = text[start : item.start]
    after = text[item.end : end].strip()
    if not _BLOCK_ITEM_PREFIX.match(before) or (after and not after.startswith("#")):
        raise SopsConfigError("an entry to remove shares its line with others; put one '- item' per line")
    return start, end


def write_config(config_file: Path, text: str) -> None:
    """Replace `config_file` with `text` atomically, keeping its permissions."""
    mode = config_file.stat().st_mode & 0o777 if config_file.exists() else 0o644
    handle, temporary = tempfile.mkstemp(dir=config_file.parent, prefix=f".{config_file.name}.")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, config_file)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- one secrets file per host: a creation rule for each --------------------------------------------


_REGEX_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")


def host_rule_regex(relative_path: str) -> str:
    """The `path_regex` of a rule for exactly one file (its path relative to `.sops.yaml`'s directory).

    Only the characters special to Go's regexp (sops' `path_regex`) and Python's are escaped, so that
    `nixos-1` reads as written (`re.escape` would write `nixos\\-1`).
    """
    return "^" + _REGEX_SPECIAL.sub(r"\\\1", relative_path) + "$"


def _matches(regex: str, path: str) -> bool:
    try:
        return re.search(regex, path) is not None
    except re.error as error:
        raise SopsConfigError(f"path_regex {regex!r} is not a regular expression: {error}") from None


def _single_file(regex: str) -> bool:
    """Whether `regex` is a `host_rule_regex`: one file, anchored, only special characters escaped."""
    if not (regex.startswith("^") and regex.endswith("$")):
        return False
    path = re.sub(r"\\(.)", r"\1", regex[1:-1])
    return host_rule_regex(path) == regex


def has_own_rule(text: str, path: str) -> bool:
    """Whether the rule sops takes for `path` is one for that file alone (`host_rule_regex`)."""
    try:
        config = SopsConfig(text, path)
    except SopsConfigError:
        return False
    regex = config._rule.get("path_regex")
    return regex is not None and regex.value == host_rule_regex(path)


def _deep_end(node: _Node) -> int:
    """Where the last scalar or alias under `node` ends (a block node's own end reaches the next token)."""
    ends = [node.end] if node.kind in ("scalar", "alias") else []
    ends += [_deep_end(item) for item in node.items]
    ends += [_deep_end(value) for _key, value in node.pairs]
    return max(ends, default=node.start)


def _rule_span(text: str, rule: _Node) -> tuple[int, int]:
    """The lines of one block rule of creation_rules: from its `- ` to the end of its last line."""
    start, _ = _line_bounds(text, rule.start)
    if not _BLOCK_ITEM_PREFIX.match(text[start : rule.start]):
        raise SopsConfigError(
            "creation_rules is laid out in a way tailnix does not edit; write one '- ' rule each"
        )
    _, end = _line_bounds(text, _deep_end(rule) - 1)
    return start, end


def _as_alias(recipient: Recipient) -> str:
    return f"*{recipient.name}" if recipient.name else recipient.recipient


class HostRules:
    """The per-host rules of a `.sops.yaml`: each host's file for the admins and that host alone.

    The text is parsed once; each host's rule is then found by its `path_regex` (a fleet has a rule per
    host, and a file of 500 rules is read for every host by rotate-key and check).

    + text: the file's content
    + admins_path: the admins' copy of the key (relative to `.sops.yaml`'s directory); the recipients of
      the rule that covers it are the admins, and every host's rule lists them first
    """

    def __init__(self, text: str, admins_path: str) -> None:
        self.text = text
        self.admins_path = admins_path
        self._admins = SopsConfig(text, admins_path)
        rules = self._admins._root.get("creation_rules")
        assert rules is not None  # SopsConfig found a rule among them
        self._own: dict[str, tuple[int, _Node]] = {}
        self._others: list[tuple[int, _Node]] = []
        for index, rule in enumerate(rules.items):
            regex = rule.get("path_regex") if rule.kind == "map" else None
            if regex is not None and _single_file(regex.value):
                self._own.setdefault(regex.value, (index, rule))
            else:
                self._others.append((index, rule))

    def admins(self) -> list[Recipient]:
        """The admins, as the rule of their own copy lists them."""
        return self._admins.recipients()

    def named(self, name: str) -> str | None:
        """The recipient recorded under the anchor `name`, None when there is none."""
        return self._admins.named(name)

    def _shadowing(self, host_path: str, before: int) -> _Node | None:
        """A rule above index `before` that is not for one file and matches `host_path` (sops takes it)."""
        for index, rule in self._others:
            regex = rule.get("path_regex") if rule.kind == "map" else None
            if index < before and (regex is None or _matches(regex.value, host_path)):
                return rule
        return None

    def rule_of(self, host_path: str) -> SopsConfig | None:
        """The rule tailnix keeps for `host_path` (anchored to it), None when there is none."""
        entry = self._own.get(host_rule_regex(host_path))
        if host_path == self.admins_path or entry is None or self._shadowing(host_path, entry[0]):
            return None
        return SopsConfig._for_rule(self._admins, host_path, entry[1])

    def recipients_of(self, host_path: str) -> list[str] | None:
        """The recipients the rule for `host_path` gives its file; None when it has no rule of its own."""
        config = self.rule_of(host_path)
        return None if config is None else [r.recipient for r in config.recipients()]

    def with_host(self, host_path: str, name: str, recipient: str) -> str:
        """The text with a rule for `host_path` whose one key group is the admins and `*name`.

        The rule goes just before the admins' rule (sops takes the first rule that matches, so a
        broader admins' rule never shadows it); `&name` is recorded under keys, or given the new value.
        """
        existing = self.rule_of(host_path)
        if existing is not None:
            _check_name_and_recipient(name, recipient)
            return existing.with_recipient(name, recipient)
        return self.with_hosts([(host_path, name, recipient)])

    def with_hosts(self, hosts: list[tuple[str, str, str]]) -> str:
        """The text with a new rule for each (file, name, recipient), as `with_host` adds one, in one edit.

        None of the files may have a rule yet; the result is parsed and checked once.
        """
        admin_rule = self._admins._rule
        admin_index = next(index for index, rule in enumerate(self._rules()) if rule is admin_rule)
        start, _ = _rule_span(self.text, admin_rule)
        prefix = self.text[start : admin_rule.start]
        pad = " " * len(prefix)
        admins = [_as_alias(r) for r in self.admins()]
        rules, anchors, replaced = [], [], []
        for host_path, name, recipient in hosts:
            _check_name_and_recipient(name, recipient)
            if host_rule_regex(host_path) in self._own:
                raise SopsConfigError(f"{host_path} has a rule already")
            shadow = self._shadowing(host_path, admin_index)
            if shadow is not None:
                regex = shadow.get("path_regex")
                shown = regex.value if regex is not None else "(none: it matches every file)"
                raise SopsConfigError(
                    f"{host_path} is already covered by another rule (path_regex {shown}), which comes "
                    "before the admins' rule; remove it or move it below"
                )
            rules += [
                f"{prefix}path_regex: '{host_rule_regex(host_path)}'",
                f"{pad}key_groups:",
                f"{pad}  - age:",
            ]
            rules += [f"{pad}      - {member}" for member in [*admins, f"*{name}"]]
            anchor = self._admins._named.get(name)
            if anchor is None:
                anchors.append(f"&{name} {recipient}")
            elif anchor.kind != "scalar":
                raise SopsConfigError(f"the anchor &{name} does not name an age recipient")
            elif anchor.value != recipient:
                replaced.append((anchor, f"&{name} {recipient}"))
        # Edits from the end of the text backwards: the rules, then the new anchors at the end of keys:,
        # then the anchors given a new value (all of keys: comes before the rules).
        text = _insert(self.text, start, "\n".join(rules) + "\n")
        if anchors:
            if self._admins._root.get("keys") is None:
                at, addition = self._admins._anchor_point(text, anchors[0])
                addition += "".join(f"  - {item}\n" for item in anchors[1:])
            else:
                points = [self._admins._anchor_point(text, item) for item in anchors]
                at, addition = points[0][0], "".join(item for _, item in points)
            text = _insert(text, at, addition)
        for anchor, value in sorted(replaced, key=lambda edit: -edit[0].start):
            text = text[: anchor.start] + value + text[anchor.end :]
        wanted = [r.recipient for r in self.admins()]
        try:
            yaml.safe_load(text)
            after = HostRules(text, self.admins_path)
            got = {path: after.recipients_of(path) for path, _, _ in hosts}
        except (yaml.YAMLError, SopsConfigError) as error:
            raise SopsConfigError(f"the edit would break the file ({error}); it was not written") from None
        if [r.recipient for r in after.admins()] != wanted or any(
            got[path] != [*wanted, recipient] for path, _, recipient in hosts
        ):
            raise SopsConfigError("the edit did not give the intended key groups; the file was not written")
        return text

    def _rules(self) -> list[_Node]:
        rules = self._admins._root.get("creation_rules")
        return rules.items if rules is not None else []

    def without_host(self, host_path: str, name: str) -> str:
        """The text without the rule for `host_path`, and without `&name` unless another rule uses it."""
        rule = self.rule_of(host_path)
        if rule is None:
            raise SopsConfigError(f"no rule of .sops.yaml is for {host_path} alone")
        start, end = _rule_span(self.text, rule._rule)
        text = self.text[:start] + self.text[end:]
        anchor = self._admins._named.get(name)
        root = _compose(text)
        if anchor is not None and root is not None and _count_aliases(root, name) == 0:
            # The anchor comes before the rules: its offsets did not move.
            line_start, line_end = _line_removal(text, anchor)
            text = text[:line_start] + text[line_end:]
        try:
            after = HostRules(text, self.admins_path)
        except SopsConfigError as error:
            raise SopsConfigError(f"the edit would break the file ({error}); it was not written") from None
        if after.rule_of(host_path) is not None or after.admins() != self.admins():
            raise SopsConfigError("the edit did not remove the rule alone; the file was not written")
        return text


def with_admins_rule(text: str, admins_path: str, admins: list[Recipient]) -> str:
    """The text with a first rule for the admins' copy alone, whose key group is `admins`.

    For a fleet moving to one file per host: the rule goes first, so no rule of the shared file (which
    lists the hosts) covers the admins' copy.
    """
    root = _compose(text)
    if root is None or root.kind != "map":
        raise SopsConfigError("it must be a mapping with creation_rules")
    rules = root.get("creation_rules")
    if rules is None or rules.kind != "seq" or rules.flow or not rules.items:
        raise SopsConfigError("it has no block list of creation_rules")
    start, _ = _rule_span(text, rules.items[0])
    prefix = text[start : rules.items[0].start]
    pad = " " * len(prefix)
    lines = [f"{prefix}path_regex: '{host_rule_regex(admins_path)}'", f"{pad}key_groups:", f"{pad}  - age:"]
    lines += [f"{pad}      - {_as_alias(r)}" for r in admins]
    text = _insert(text, start, "\n".join(lines) + "\n")
    try:
        got = [r.recipient for r in HostRules(text, admins_path).admins()]
    except SopsConfigError as error:
        raise SopsConfigError(f"the edit would break the file ({error}); it was not written") from None
    if got != [r.recipient for r in admins]:
        raise SopsConfigError("the edit did not give the intended key group; the file was not written")
    return text
