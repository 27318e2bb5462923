"""Tags and host names with what `tailscale up` (v1.90.6) says of each: None when it takes the value.

Read from `tailcfg/tailcfg.go` (`CheckTag`), `util/dnsname/dnsname.go` (`ValidHostname`: `ToFQDN`, then
`ValidLabel` per label) and `cmd/tailscale/cli/up.go` (`prefsFromUpArgs`: `tag: %q: %s`, and the
hostname's error as it is). One table for the settings check (tests/unit) and the lab's CLI (tests/lab).
"""

from __future__ import annotations

# One tag as an item of tailscale_advertise_tags; the CLI sees it after a good one: --advertise-tags=tag:ok,TAG
TAG_CORPUS: list[tuple[str, str | None]] = [
    ("tag:server", None),
    ("tag:Web-1", None),
    ("tag:a", None),
    ("tag:a-", None),
    ("server", "tag: \"server\": tags must start with 'tag:'"),
    ("Tag:server", "tag: \"Tag:server\": tags must start with 'tag:'"),
    (" tag:server", "tag: \" tag:server\": tags must start with 'tag:'"),
    ("", "tag: \"\": tags must start with 'tag:'"),
    ("tag:", 'tag: "tag:": tag names must not be empty'),
    ("tag:1web", "tag: \"tag:1web\": tag names must start with a letter, after 'tag:'"),
    ("tag:-web", "tag: \"tag:-web\": tag names must start with a letter, after 'tag:'"),
    ("tag:éa", "tag: \"tag:éa\": tag names must start with a letter, after 'tag:'"),
    ("tag:web_1", 'tag: "tag:web_1": tag names can only contain numbers, letters, or dashes'),
    ("tag:web.prod", 'tag: "tag:web.prod": tag names can only contain numbers, letters, or dashes'),
    ("tag:wéb", 'tag: "tag:wéb": tag names can only contain numbers, letters, or dashes'),
    ("tag:web ", 'tag: "tag:web ": tag names can only contain numbers, letters, or dashes'),
    ("tag:web\t", 'tag: "tag:web\\t": tag names can only contain numbers, letters, or dashes'),
    ("tag:tag:web", 'tag: "tag:tag:web": tag names can only contain numbers, letters, or dashes'),
]

_LONG = "a" * 64
# Four labels and three dots: 252 bytes is the longest name, 253 is one too many (ToFQDN counts the final dot).
_NAME_252 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 60])
_NAME_253 = _NAME_252 + "d"

# One --hostname value; an empty one means the OS's host name and is not checked.
HOSTNAME_CORPUS: list[tuple[str, str | None]] = [
    ("", None),
    ("web-1", None),
    ("Web1", None),
    ("1", None),
    ("a" * 63, None),
    ("web.example.com", None),
    ("web.", None),
    (".web", None),
    ("xn--bcher-kva", None),
    (_NAME_252, None),
    (_NAME_252 + ".", None),
    (_NAME_253, f'"{_NAME_253}" is too long to be a DNS name'),
    ("-web", '"-web" is not a valid DNS label: must start with a letter or number'),
    ("web-", '"web-" is not a valid DNS label: must end with a letter or number'),
    ("web_1", "\"web_1\" is not a valid DNS label: contains invalid character '_'"),
    ("web 1", "\"web 1\" is not a valid DNS label: contains invalid character ' '"),
    ("web;reboot", "\"web;reboot\" is not a valid DNS label: contains invalid character ';'"),
    ("w'b", "\"w'b\" is not a valid DNS label: contains invalid character '\\''"),
    # Bytes, not characters: é is 0xc3 0xa9, and Go's %q of the byte 0xc3 is the rune U+00C3.
    ("wéb", "\"wéb\" is not a valid DNS label: contains invalid character 'Ã'"),
    ("wé", '"wé" is not a valid DNS label: must end with a letter or number'),
    ("web\n", '"web\\n" is not a valid DNS label: must end with a letter or number'),
    ("_", '"_" is not a valid DNS label: must start with a letter or number'),
    (_LONG, f'"{_LONG}" is too long, max length is 63 bytes'),
    ("é" * 32, f'"{"é" * 32}" is too long, max length is 63 bytes'),
    # A label a dot ends is checked by ToFQDN first, in its own words.
    (_LONG + ".lan", f'"{_LONG}" is not a valid DNS label'),
    ("web..lan", '"" is not a valid DNS label'),
    ("web_1.lan", "\"web_1\" is not a valid DNS label: contains invalid character '_'"),
    ("web.-lan", '"-lan" is not a valid DNS label: must start with a letter or number'),
    (".", "empty DNS label"),
    ("..", "empty DNS label"),
    ("...", '"" is not a valid DNS label'),
]
