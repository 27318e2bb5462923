"""Tags and host names read exactly as the Tailscale CLI reads them, by the settings and by the lab's tailscale.

`tailscale up` (tailscale v1.90.6, `cmd/tailscale/cli/up.go` `prefsFromUpArgs`) splits `--advertise-tags` on
commas and runs each piece through `tailcfg.CheckTag` (`tailcfg/tailcfg.go`), and runs a non-empty
`--hostname` through `dnsname.ValidHostname` (`util/dnsname/dnsname.go`). Both work on bytes: lengths are
counted in bytes, and only ASCII letters and digits are letters and digits. Any refusal is fatal: the CLI
prints the sentence these functions return and exits 1.

Plain functions and no imports beyond the project's stdlib-only modules: the lab's emulated CLI imports
this at every call.
"""

from __future__ import annotations

from tailnix.prefix import go_quote, go_quote_rune

# RFC 1035 as dnsname counts: a label of at most 63 bytes, a name of at most 253 with its final dot.
MAX_LABEL = 63
MAX_NAME = 253


def _alpha(byte: int) -> bool:
    return 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _alphanum(byte: int) -> bool:
    return _alpha(byte) or 0x30 <= byte <= 0x39


def _dns_char(byte: int) -> bool:
    return _alphanum(byte) or byte == 0x2D


def tag_error(tag: str) -> str | None:
    """What `tailscale up --advertise-tags` says of one tag (`tag: "X": reason`), or None for a good tag."""
    reason = check_tag(tag)
    return f"tag: {go_quote(tag)}: {reason}" if reason else None


def check_tag(text: str) -> str | None:
    """`tailcfg.CheckTag`: why the tag is not a valid ACL tag, or None."""
    tag = text.encode()
    if not tag.startswith(b"tag:"):
        return "tags must start with 'tag:'"
    name = tag[4:]
    if not name:
        return "tag names must not be empty"
    if not _alpha(name[0]):
        return "tag names must start with a letter, after 'tag:'"
    if not all(_dns_char(b) for b in name):
        return "tag names can only contain numbers, letters, or dashes"
    return None


def tags_error(value: str) -> str | None:
    """What `tailscale up --advertise-tags=VALUE` says of the comma-separated list (empty: no tags)."""
    if not value:
        return None
    for tag in value.split(","):
        error = tag_error(tag)
        if error:
            return error
    return None


def hostname_error(hostname: str) -> str | None:
    """What `tailscale up --hostname=NAME` says of the name, or None when it takes it.

    Empty means the OS's host name and is never checked. One leading and one trailing dot are allowed
    (`ToFQDN` drops them); every label between dots must be a DNS label.
    """
    if not hostname:
        return None
    name = hostname.encode()
    labels = _fqdn_labels(name)
    if isinstance(labels, str):
        return labels
    for label in labels:
        error = _label_error(label)
        if error:
            return error
    return None


def _text(raw: bytes) -> str:
    return raw.decode(errors="surrogateescape")


def _fqdn_labels(name: bytes) -> list[bytes] | str:
    """dnsname.ToFQDN: the labels of the name, or its refusal (too long, an empty or long inner label)."""
    if name == b".":
        return [b""]
    if name.startswith(b"."):
        name = name[1:]
    length = len(name)
    if name.endswith(b"."):
        name = name[:-1]
    else:
        length += 1
    if length > MAX_NAME:
        return f"{go_quote(_text(name))} is too long to be a DNS name"
    labels = name.split(b".")
    # ToFQDN looks only at the labels a dot ends; the last one is left to ValidLabel.
    for label in labels[:-1]:
        if not label or len(label) > MAX_LABEL:
            return f"{go_quote(_text(label))} is not a valid DNS label"
    return labels


def _label_error(label: bytes) -> str | None:
    """dnsname.ValidLabel."""
    quoted = go_quote(_text(label))
    if not label:
        return "empty DNS label"
    if len(label) > MAX_LABEL:
        return f"{quoted} is too long, max length is {MAX_LABEL} bytes"
    if not _alphanum(label[0]):
        return f"{quoted} is not a valid DNS label: must start with a letter or number"
    if not _alphanum(label[-1]):
        return f"{quoted} is not a valid DNS label: must end with a letter or number"
    for byte in label[1:-1]:
        if not _dns_char(byte):
            return f"{quoted} is not a valid DNS label: contains invalid character {go_quote_rune(byte)}"
    return None
