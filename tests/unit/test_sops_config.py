"""The `.sops.yaml` editor: recipients added, replaced and removed by name, everything else kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tailnix.sops_config import SopsConfig, SopsConfigError, write_config

ADMIN = "age1" + "q" * 58
DESK = "age1" + "p" * 58
GATEWAY = "age1" + "z" * 58
NEW = "age1" + "x" * 58
SECRETS = "secrets/tailscale.yaml"

BLOCK = f"""\
# Who can read the fleet's secrets.
keys:
  - &admin {ADMIN}  # my laptop
  - &desk {DESK}
creation_rules:
  # the Tailscale auth key
  - path_regex: secrets/tailscale\\.yaml$
    key_groups:
      - age:
          - *admin
          - *desk
  - path_regex: other/.*
    key_groups:
      - age: [*admin]
"""

FLOW = f"""\
keys:
  - &admin {ADMIN}
  - &desk {DESK}
creation_rules:
  - path_regex: secrets/tailscale\\.yaml$
    key_groups:
      - age: [*admin, *desk]
"""


def group_of(text: str, rule: int = 0) -> list[str]:
    document = yaml.safe_load(text)
    groups = document["creation_rules"][rule]["key_groups"]
    assert len(groups) == 1
    return list(groups[0]["age"])


def test_adding_a_host_keeps_comments_and_order_and_names_it() -> None:
    text = SopsConfig(BLOCK, SECRETS).with_recipient("gateway", GATEWAY)
    assert text == BLOCK.replace(
        f"  - &desk {DESK}\n", f"  - &desk {DESK}\n  - &gateway {GATEWAY}\n"
    ).replace("          - *desk\n", "          - *desk\n          - *gateway\n")
    assert group_of(text) == [ADMIN, DESK, GATEWAY]
    assert group_of(text, 1) == [ADMIN]
    assert SopsConfig(text, SECRETS).named("gateway") == GATEWAY


def test_adding_to_a_flow_list() -> None:
    text = SopsConfig(FLOW, SECRETS).with_recipient("gateway", GATEWAY)
    assert "      - age: [*admin, *desk, *gateway]\n" in text
    assert group_of(text) == [ADMIN, DESK, GATEWAY]


def test_a_config_without_keys_gets_a_keys_list_before_the_rules() -> None:
    plain = (
        f"creation_rules:\n  - path_regex: secrets/.*\n    key_groups:\n      - age:\n          - {ADMIN}\n"
    )
    text = SopsConfig(plain, SECRETS).with_recipient("desk", DESK)
    assert text.startswith(f"keys:\n  - &desk {DESK}\ncreation_rules:\n")
    assert group_of(text) == [ADMIN, DESK]


def test_replacing_a_hosts_key_changes_only_its_value() -> None:
    text = SopsConfig(BLOCK, SECRETS).with_recipient("desk", NEW)
    assert text == BLOCK.replace(f"&desk {DESK}", f"&desk {NEW}")
    assert group_of(text) == [ADMIN, NEW]


def test_removing_a_host_removes_its_anchor_and_alias_only() -> None:
    text = SopsConfig(BLOCK, SECRETS).without_recipient("desk")
    assert text == BLOCK.replace(f"  - &desk {DESK}\n", "").replace("          - *desk\n", "")
    assert group_of(text) == [ADMIN]


def test_removing_from_a_flow_list() -> None:
    text = SopsConfig(FLOW, SECRETS).without_recipient("desk")
    assert "      - age: [*admin]\n" in text
    assert group_of(text) == [ADMIN]


def test_add_then_remove_gives_the_original_back() -> None:
    added = SopsConfig(BLOCK, SECRETS).with_recipient("gateway", GATEWAY)
    assert SopsConfig(added, SECRETS).without_recipient("gateway") == BLOCK


def test_recipients_and_names_are_read() -> None:
    config = SopsConfig(BLOCK, SECRETS)
    assert [(r.name, r.recipient) for r in config.recipients()] == [("admin", ADMIN), ("desk", DESK)]
    assert config.named("desk") == DESK
    assert config.named("gateway") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f"creation_rules:\n  - path_regex: secrets/.*\n    key_groups:\n      - age: [{ADMIN}]\n"
            f"      - age: [{DESK}]\n",
            "has 2 key groups; it must have exactly one",
        ),
        (f"creation_rules:\n  - path_regex: secrets/.*\n    age: {ADMIN}\n", "has no key_groups"),
        (f"creation_rules:\n  - path_regex: nothing/.*\n    age: {ADMIN}\n", "no creation rule"),
        ("keys: [\n", "not valid YAML"),
        ("keys: []\n", "no creation_rules"),
    ],
)
def test_configs_that_cannot_be_edited_safely_are_refused(text: str, message: str) -> None:
    with pytest.raises(SopsConfigError, match=message):
        SopsConfig(text, SECRETS)


def test_forgetting_the_only_or_an_unknown_recipient_is_refused() -> None:
    only = f"keys:\n  - &admin {ADMIN}\ncreation_rules:\n  - key_groups:\n      - age:\n          - *admin\n"
    with pytest.raises(SopsConfigError, match="only recipient"):
        SopsConfig(only, SECRETS).without_recipient("admin")
    with pytest.raises(SopsConfigError, match="no recipient is named gateway"):
        SopsConfig(BLOCK, SECRETS).without_recipient("gateway")


def test_bad_names_and_recipients_are_refused() -> None:
    with pytest.raises(SopsConfigError, match="anchor name"):
        SopsConfig(BLOCK, SECRETS).with_recipient("bad name", GATEWAY)
    with pytest.raises(SopsConfigError, match="not an age recipient"):
        SopsConfig(BLOCK, SECRETS).with_recipient("gateway", "ssh-ed25519 AAAA")


def test_read_matches_path_regex_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / ".sops.yaml").write_text(BLOCK)
    config = SopsConfig.read(tmp_path / ".sops.yaml", tmp_path / "secrets" / "tailscale.yaml")
    assert config.secrets_path == SECRETS
    write_config(tmp_path / ".sops.yaml", config.with_recipient("gateway", GATEWAY))
    assert group_of((tmp_path / ".sops.yaml").read_text()) == [ADMIN, DESK, GATEWAY]
    with pytest.raises(SopsConfigError, match="is not under"):
        SopsConfig.read(tmp_path / ".sops.yaml", Path("/elsewhere/secrets/tailscale.yaml"))


STYLES = {
    "dashes at the parent's column": f"""\
keys:
- &admin {ADMIN}
- &desk {DESK}
creation_rules:
- path_regex: secrets/tailscale\\.yaml$
  key_groups:
  - age:
    - *admin
    - *desk
""",
    "four spaces": f"""\
---
# leading comment
keys:
    - &admin "{ADMIN}"
    - &desk {DESK}   # desk
creation_rules:
    - path_regex: 'secrets/tailscale\\.yaml$'
      encrypted_regex: "^(data|stringData)$"
      key_groups:
          - age:
              - *admin
              - *desk
# trailing comment
""",
}


@pytest.mark.parametrize("style", STYLES)
def test_each_layout_is_kept_when_a_host_comes_and_goes(style: str) -> None:
    """Only the two lines of the host change, whatever the file's layout.

    This is why the editor works on the text: ruamel.yaml's round trip (0.18) writes the whole file with
    one indentation, so a file whose lists are indented differently at different levels (the second
    layout here) comes back re-indented in lines nobody touched, and its `---` is dropped.
    """
    original = STYLES[style]
    added = SopsConfig(original, SECRETS).with_recipient("gateway", GATEWAY)
    assert group_of(added) == [ADMIN, DESK, GATEWAY]
    new_lines = [line for line in added.splitlines() if line not in original.splitlines()]
    assert [line.strip() for line in new_lines] == [f"- &gateway {GATEWAY}", "- *gateway"], added
    assert SopsConfig(added, SECRETS).without_recipient("gateway") == original
