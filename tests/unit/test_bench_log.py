"""The bench reads back, whole, the commands pyinfra's `--debug` log says it sent (to count and replay them)."""

from __future__ import annotations

import shlex

from tailnix.facts import TailnixHostState
from tailnix_lab.bench import sent_commands


def _logged(host: str, command: str) -> list[str]:
    # pyinfra_cli prints a debug record as `    [logger] message`; a multi-line message goes on unindented.
    return f"    [pyinfra.connectors.ssh] Running command on {host}: (pty=False) {command}".splitlines()


def test_the_state_command_is_read_back_as_it_was_sent() -> None:
    # The state script has lines that look like log lines (`[ -d "$pending" ]`) and blank lines.
    state_command = "sh -c " + shlex.quote(TailnixHostState().command(switch_wait=120))
    assert '\n[ -d "$pending" ]' in state_command
    lines = [
        "--> Preparing operations...",
        *_logged("nixos-1", state_command),
        *_logged("nixos-2", "sh -c 'true'"),
        "    [nixos-1] Tailscale is Running as nixos-1 (100.64.0.2)",
        *_logged("nixos-1", "sh -c 'echo one\n\necho two'"),
    ]
    assert list(sent_commands(lines)) == [
        ("nixos-1", state_command),
        ("nixos-2", "sh -c 'true'"),
        ("nixos-1", "sh -c 'echo one\n\necho two'"),
    ]
