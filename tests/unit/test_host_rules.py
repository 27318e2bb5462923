"""The per-host rules of `.sops.yaml`: each host's file for the admins and that host alone.

What sops does with them is the real binary's business (tests/e2e/test_per_host_secrets.py); here, the
text: one rule per host, anchored to its file, just before the admins' rule, comments and order kept.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tailnix.sops_config import HostRules, SopsConfig, SopsConfigError, host_rule_regex, with_admins_rule

ADMIN = "age1" + "q" * 58
DESK = "age1" + "p" * 58
GATEWAY = "age1" + "z" * 58
NEW = "age1" + "x" * 58
ADMINS = "secrets/hosts/admins.yaml"
DESK_FILE = "secrets/hosts/desk.yaml"
GATEWAY_FILE = "secrets/hosts/gateway.yaml"

PER_HOST = f"""\
# Who can open which file.
keys:
  - &admin {ADMIN}  # my laptop
creation_rules:
  # the admins' own copy of the key
  - path_regex: '^secrets/hosts/admins\\.yaml$'
    key_groups:
      - age:
          - *admin
"""


def rules_of(text: str) -> list[tuple[str | None, list[str]]]:
    """Each rule's path_regex and its one key group, as a YAML reader (and sops) sees them."""
    rules = yaml.safe_load(text)["creation_rules"]
    found = []
    for rule in rules:
        (group,) = rule["key_groups"]
        found.append((rule.get("path_regex"), list(group["age"])))
    return found


def test_a_host_gets_a_rule_of_its_own_before_the_admins_rule() -> None:
    text = HostRules(PER_HOST, ADMINS).with_host(DESK_FILE, "desk", DESK)
    assert rules_of(text) == [
        (host_rule_regex(DESK_FILE), [ADMIN, DESK]),
        (host_rule_regex(ADMINS), [ADMIN]),
    ]
    # The file's own words are kept, the anchor is named after the host, the rule lists aliases.
    assert text.startswith("# Who can open which file.\nkeys:\n  - &admin " + ADMIN + "  # my laptop\n")
    assert f"  - &desk {DESK}\n" in text
    assert "  # the admins' own copy of the key\n" in text
    assert "      - age:\n          - *admin\n          - *desk\n" in text


def test_the_rule_matches_only_its_file() -> None:
    regex = host_rule_regex(DESK_FILE)
    assert re.search(regex, DESK_FILE)
    for other in ("secrets/hosts/desk.yaml.bak", "old/secrets/hosts/desk.yaml", "secrets/hosts/deskXyaml"):
        assert not re.search(regex, other), other


def test_each_host_reads_its_own_rule_and_the_admins_stay_alone() -> None:
    text = HostRules(PER_HOST, ADMINS).with_host(DESK_FILE, "desk", DESK)
    text = HostRules(text, ADMINS).with_host(GATEWAY_FILE, "gateway", GATEWAY)
    rules = HostRules(text, ADMINS)
    assert rules.recipients_of(DESK_FILE) == [ADMIN, DESK]
    assert rules.recipients_of(GATEWAY_FILE) == [ADMIN, GATEWAY]
    assert rules.recipients_of("secrets/hosts/other.yaml") is None
    assert [r.recipient for r in rules.admins()] == [ADMIN]
    # What sops would use for each path: the first rule that matches.
    assert SopsConfig(text, DESK_FILE).recipients()[-1].recipient == DESK
    assert [r.recipient for r in SopsConfig(text, ADMINS).recipients()] == [ADMIN]


def test_adding_again_changes_nothing_and_a_new_key_replaces_the_old() -> None:
    once = HostRules(PER_HOST, ADMINS).with_host(DESK_FILE, "desk", DESK)
    assert HostRules(once, ADMINS).with_host(DESK_FILE, "desk", DESK) == once
    replaced = HostRules(once, ADMINS).with_host(DESK_FILE, "desk", NEW)
    assert replaced == once.replace(f"&desk {DESK}", f"&desk {NEW}")
    assert HostRules(replaced, ADMINS).recipients_of(DESK_FILE) == [ADMIN, NEW]


def test_removing_a_host_gives_the_file_back_as_it_was() -> None:
    desk = HostRules(PER_HOST, ADMINS).with_host(DESK_FILE, "desk", DESK)
    both = HostRules(desk, ADMINS).with_host(GATEWAY_FILE, "gateway", GATEWAY)
    assert HostRules(both, ADMINS).without_host(GATEWAY_FILE, "gateway") == desk
    without_desk = HostRules(both, ADMINS).without_host(DESK_FILE, "desk")
    assert HostRules(without_desk, ADMINS).recipients_of(DESK_FILE) is None
    assert HostRules(without_desk, ADMINS).recipients_of(GATEWAY_FILE) == [ADMIN, GATEWAY]
    assert "&desk" not in without_desk
    assert HostRules(HostRules(desk, ADMINS).without_host(DESK_FILE, "desk"), ADMINS).text == PER_HOST


def test_an_anchor_another_rule_uses_stays_when_its_host_rule_goes() -> None:
    """A fleet moving from the shared file: the shared rule still lists the host until it is dropped."""
    shared = PER_HOST + (
        "  - path_regex: secrets/tailscale\\.yaml$\n    key_groups:\n      - age:\n          - *admin\n"
    )
    shared = SopsConfig(shared, "secrets/tailscale.yaml").with_recipient("desk", DESK)
    text = HostRules(shared, ADMINS).with_host(DESK_FILE, "desk", DESK)
    assert text.count(f"&desk {DESK}") == 1
    removed = HostRules(text, ADMINS).without_host(DESK_FILE, "desk")
    assert removed == shared


def test_an_admin_added_by_hand_is_in_every_new_host_rule() -> None:
    text = PER_HOST.replace(
        f"  - &admin {ADMIN}  # my laptop\n", f"  - &admin {ADMIN}  # my laptop\n  - &bob {NEW}\n"
    ).replace("          - *admin\n", "          - *admin\n          - *bob\n")
    added = HostRules(text, ADMINS).with_host(DESK_FILE, "desk", DESK)
    assert HostRules(added, ADMINS).recipients_of(DESK_FILE) == [ADMIN, NEW, DESK]


def test_a_rule_that_already_covers_the_host_file_is_refused() -> None:
    broad = PER_HOST.replace(
        "creation_rules:\n", "creation_rules:\n  - path_regex: hosts/d\n    key_groups: [{age: [*admin]}]\n"
    )
    with pytest.raises(SopsConfigError, match="already covered by another rule \\(path_regex hosts/d\\)"):
        HostRules(broad, ADMINS).with_host(DESK_FILE, "desk", DESK)


def test_without_a_rule_for_the_admins_copy_nothing_is_edited() -> None:
    with pytest.raises(
        SopsConfigError, match="no creation rule's path_regex matches secrets/hosts/admins.yaml"
    ):
        HostRules(PER_HOST.replace("admins", "others"), ADMINS)


def test_the_admins_rule_goes_first_for_a_fleet_moving_to_per_host_files() -> None:
    shared = (
        f"keys:\n  - &admin {ADMIN}\n  - &desk {DESK}\ncreation_rules:\n"
        "  - key_groups:\n      - age:\n          - *admin\n          - *desk\n"
    )
    admins = [r for r in SopsConfig(shared, "secrets/tailscale.yaml").recipients() if r.name == "admin"]
    text = with_admins_rule(shared, ADMINS, admins)
    assert rules_of(text) == [(host_rule_regex(ADMINS), [ADMIN]), (None, [ADMIN, DESK])]
    assert text.endswith(shared[shared.index("  - key_groups") :])


def test_many_hosts_get_their_rules_in_one_edit() -> None:
    """bootstrap of a group: one edit and one check of the file, the same rules as one by one."""
    hosts = [
        (f"secrets/hosts/h{i}.yaml", f"h{i}", "age1" + ("q" if i % 2 else "p") * 57 + "z") for i in range(2)
    ]
    hosts += [(GATEWAY_FILE, "gateway", GATEWAY)]
    at_once = HostRules(PER_HOST, ADMINS).with_hosts(hosts)
    one_by_one = PER_HOST
    for entry in hosts:
        one_by_one = HostRules(one_by_one, ADMINS).with_host(*entry)
    assert at_once == one_by_one
    with pytest.raises(SopsConfigError, match="secrets/hosts/gateway.yaml has a rule already"):
        HostRules(at_once, ADMINS).with_hosts([(GATEWAY_FILE, "gateway", GATEWAY)])
