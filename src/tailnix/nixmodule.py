"""The NixOS module a host receives: sops-nix for the key, services.tailscale, and the join unit.

The text is rendered from a host's settings and is meant to be read on the host: it looks hand-written and
says what manages it. One template, two modes: `autoconnect` (tailnix's own unit, the default) and `native`
(NixOS's `services.tailscale.authKeyFile`).
"""

from __future__ import annotations

import re

from tailnix import paths
from tailnix.settings import TailscaleSettings

# How long the unit waits for tailscaled to leave NoState before it gives up (seconds).
DAEMON_WAIT_SECONDS = 30


def nix_string(value: str) -> str:
    """`value` as a double-quoted Nix string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


_NIX_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_'-]*")
_NIX_KEYWORDS = frozenset({"assert", "else", "if", "in", "inherit", "let", "or", "rec", "then", "with"})


def nix_attribute(name: str) -> str:
    """`name` as one Nix attribute name: bare when it is an identifier, quoted otherwise.

    A dot would otherwise make a nested attribute (`a.b`), and a leading digit or a keyword a parse error.
    """
    if _NIX_IDENTIFIER.fullmatch(name) and name not in _NIX_KEYWORDS:
        return name
    return nix_string(name)


def _nix_list(values: list[str], indent: str) -> str:
    if not values:
        return "[ ]"
    inner = "".join(f"{indent}  {nix_string(v)}\n" for v in values)
    return f"[\n{inner}{indent}]"


_HEADER = """\
# Tailscale for this host: sops-nix decrypts the auth key, and the host joins the tailnet on boot
# and on every switch.
#
# Managed by tailnix (deploys/tailscale.py): this file is replaced on every deploy. Change the host's
# settings in the inventory (the tailscale_* and tailnix_* keys) and deploy again instead of editing it.
# To read what a host would receive: tailnix module HOST -i inventory.py
"""

_SET_SCRIPT = """\

      # The prefs only `tailscale set` changes; it never logs in.
      tailscale set ${lib.escapeShellArgs setFlags}
"""

_AUTOCONNECT_SCRIPT = """\
      # tailscaled answers NoState while it starts: wait for a real state, bounded.
      state=""
      for _ in $(seq {polls}); do
        state=$(tailscale status --json --peers=false 2>/dev/null | jq -r .BackendState || true)
        if [ -n "$state" ] && [ "$state" != NoState ]; then break; fi
        sleep 0.5
      done

      # Log in with the key from sops, passing any extra flags of `tailscale up`.
      up_with_key() {{
        keyfile="$RUNTIME_DIRECTORY/auth-key"
        trap 'rm -f "$keyfile"' EXIT
        # Read with the shell itself, so the key is never in a command line or the environment.
        # The secret may hold the key alone or as TAILSCALE_AUTH_KEY=tskey-...
        key=$(< ${{{secret_path}}})
        key=''${{key#TAILSCALE_AUTH_KEY=}}
        key=''${{key#\\"}}
        key=''${{key%\\"}}
        if [ -z "$key" ]; then
          echo "tailscale-autoconnect: the secret ${{{secret_path}}} is empty" >&2
          exit 1
        fi
        printf '%s' "$key" > "$keyfile"
        unset key
        up_and_report "$@" --auth-key="file:$keyfile"
      }}

      # `tailscale up` exits 1 when control refused the login or the node did not reach Running in
      # time. That is no configuration error: the switch goes on, and deploys report the node's state.
      up_and_report() {{
        status=0
        tailscale up --reset --timeout={timeout}s "$@" ${{lib.escapeShellArgs upFlags}} || status=$?
        if [ "$status" -eq 1 ]; then
          case "$(tailscale status --json --peers=false 2>/dev/null | jq -r .BackendState || true)" in
            NeedsMachineAuth) echo "tailscale-autoconnect: logged in; waits for an admin to approve this device" >&2 ;;
            Starting) echo "tailscale-autoconnect: logged in; no path to peers or DERP yet" >&2 ;;
            *)
              # Control's own words: a bad key, or tags its owner may not apply (tagOwners).
              refused=$(tailscale status --json --peers=false 2>/dev/null |
                jq -r '[.Health[]? | select(contains("The last login error was: "))] | first // "" |
                  sub(".*The last login error was: "; "")' || true)
              echo "tailscale-autoconnect: login failed: ''${{refused:-control gave no reason}}" >&2
              echo "tailscale-autoconnect: replace the auth key, or fix the tags, and deploy again" >&2
              ;;
          esac
        elif [ "$status" -ne 0 ]; then
          exit "$status"
        fi
      }}

      case "$state" in
        Running|Starting)
          # Control grants tags at a login only: `tailscale up` with other tags would ask for an
          # interactive one, so new tags mean logging in again with the key.{server_comment}
          tags=$(tailscale debug prefs | jq -r '(.AdvertiseTags // []) | sort | join(",")')
{server_read}          if [ "$tags" != ${{lib.escapeShellArg advertiseTags}} ]{server_changed}; then
            up_with_key --force-reauth
          else
            # Joined already: apply the flags without logging in again (in Starting, `up` also
            # waits for a path to peers or DERP).
            up_and_report
          fi
          ;;
        NeedsMachineAuth)
          # Logged in; only an admin's approval (or a pre-authorized key) moves it on.
          echo "tailscale-autoconnect: this device waits for an admin to approve it" >&2
          ;;
        NeedsLogin|Stopped)
          # Never logged in, logged out, node key expired, or stopped: log in with the key.
          up_with_key
          ;;
        *)
          echo "tailscale-autoconnect: tailscaled is not ready after {wait}s (state: ''${{state:-no answer}})" >&2
          exit 1
          ;;
      esac
"""


def render_module(settings: TailscaleSettings, *, sops_nix_from_flake: bool = False) -> str:
    """The text of /etc/nixos/tailscale-autoconnect.nix for one host.

    + sops_nix_from_flake: the host's flake already has a sops-nix input and imports its module, so
      this module must not bring a second copy
    """
    secret = nix_attribute(settings.secret_name)
    # Where sops-nix puts the decrypted key, as the secret itself declares it.
    secret_path = f"config.sops.secrets.{secret}.path"
    restart_unit = paths.AUTOCONNECT_UNIT if settings.mode == "autoconnect" else paths.NATIVE_AUTOCONNECT_UNIT
    routing = settings.routing_features()

    if sops_nix_from_flake:
        sops_nix_lines = []
        sops_nix_import = [
            "  # sops-nix comes from this host's flake (its sops-nix input), not from here.",
            "",
        ]
    else:
        sops_nix_lines = [
            "  # sops-nix, pinned by hash: change tailnix_sops_nix_url and tailnix_sops_nix_sha256 to move it.",
            "  sops-nix = builtins.fetchTarball {",
            f"    url = {nix_string(settings.sops_nix.url)};",
            f"    sha256 = {nix_string(settings.sops_nix.sha256)};",
            "  };",
            "",
        ]
        sops_nix_import = ['  imports = [ "${sops-nix}/modules/sops" ];', ""]
    lines = [
        _HEADER,
        "{ config, lib, pkgs, ... }:",
        "",
        "let",
        *sops_nix_lines,
        "  # Flags for `tailscale up`. The auth key is never among them: it is read from a file.",
        f"  upFlags = {_nix_list(settings.up_flags(), '  ')};",
        *(
            [
                "  # The tags control should grant (sorted): other ones need a new login.",
                f"  advertiseTags = {nix_string(','.join(sorted(settings.requested_tags)))};",
                *([f"  loginServer = {nix_string(settings.login_server)};"] if settings.login_server else []),
            ]
            if settings.mode == "autoconnect"
            else []
        ),
        *(
            [
                "  # Prefs only `tailscale set` changes (tailscale_set), applied without a new login.",
                f"  setFlags = {_nix_list(settings.set_flags(), '  ')};",
            ]
            if settings.set_prefs
            else []
        ),
        "in",
        "{",
        *sops_nix_import,
        "  # The auth key stays encrypted in the Nix store; sops-nix decrypts it at activation into",
        f"  # /run/secrets/{settings.secret_name}, readable by root only, with the host's SSH key.",
        f"  sops.secrets.{secret} = {{",
        f"    sopsFile = {paths.SECRETS_IMPORT};",
        '    format = "yaml";',
        '    mode = "0400";',
        "    # A new key restarts the join unit; a node that is already Running stays logged in.",
        f'    restartUnits = [ "{restart_unit}.service" ];',
        "  };",
        f'  sops.age.sshKeyPaths = lib.mkDefault [ "{paths.HOST_KEY_PRIVATE}" ];',
        "",
        "  services.tailscale.enable = true;",
    ]
    if routing is not None:
        lines += [
            "  # This host advertises routes or an exit node: forward packets"
            + (", and accept other routers' routes." if routing == "both" else "."),
            f"  services.tailscale.useRoutingFeatures = lib.mkDefault {nix_string(routing)};",
        ]
    if settings.mode == "native":
        lines += [
            "",
            "  # NixOS's own join unit (tailscaled-autoconnect). The secret must hold the bare key.",
            f"  services.tailscale.authKeyFile = {secret_path};",
            "  services.tailscale.extraUpFlags = upFlags;",
            *(["  services.tailscale.extraSetFlags = setFlags;"] if settings.set_prefs else []),
            "}",
            "",
        ]
        return "\n".join(lines)

    polls = DAEMON_WAIT_SECONDS * 2
    server = settings.login_server
    script = _AUTOCONNECT_SCRIPT.format(
        server_comment=(
            "\n          # Another login server too: `up` changes it only with --force-reauth."
            if server
            else ""
        ),
        server_read=(
            "          server=$(tailscale debug prefs | jq -r '.ControlURL // \"\"')\n" if server else ""
        ),
        server_changed=' || [ "$server" != ${lib.escapeShellArg loginServer} ]' if server else "",
        polls=polls,
        timeout=settings.up_timeout,
        secret_path=secret_path,
        wait=DAEMON_WAIT_SECONDS,
    )
    if settings.set_prefs:
        # After `up`: a new login's `up` replaces the prefs, set-only ones with it.
        script += _SET_SCRIPT
    lines += [
        "",
        f"  systemd.services.{paths.AUTOCONNECT_UNIT} = {{",
        '    description = "Join the tailnet with the auth key from sops";',
        '    after = [ "tailscaled.service" ];',
        '    wants = [ "tailscaled.service" ];',
        '    wantedBy = [ "multi-user.target" ];',
        "    path = [ config.services.tailscale.package pkgs.jq ];",
        "    serviceConfig = {",
        '      Type = "oneshot";',
        "      RemainAfterExit = true;",
        "      # A root-only directory for the key file `tailscale up --auth-key=file:` reads.",
        f'      RuntimeDirectory = "{paths.AUTOCONNECT_UNIT}";',
        '      RuntimeDirectoryMode = "0700";',
        '      UMask = "0077";',
        "      # Bounded, so a bad key never holds up boot or a switch for long.",
        f"      TimeoutStartSec = {DAEMON_WAIT_SECONDS + settings.up_timeout + 30};",
        "    };",
        "    script = ''",
        script.rstrip("\n"),
        "    '';",
        "  };",
        "}",
        "",
    ]
    return "\n".join(lines)
