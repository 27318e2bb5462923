"""CIDR prefixes read exactly as the Tailscale CLI reads them.

`tailscale up/set --advertise-routes` goes through Go's `netip.ParsePrefix` (Go's `src/net/netip/netip.go`),
then the CLI's own checks in `net/netutil/routes.go` `CalcAdvertiseRoutes` (tailscale v1.90.6). Python's
`ipaddress` is looser: it takes `10.0.0.0/255.0.0.0`, `10.0.0.0/08`, a bare `10.0.0.0` and zones like
`fe80::%eth0/64`, all of which the CLI refuses. The settings check and the lab's emulated CLI both use
this module, so the workstation refuses exactly what a host would.

Plain classes and no imports beyond the standard library: the lab's emulated CLI imports this at every call.
"""

from __future__ import annotations

from collections.abc import Iterable

_MAX16 = 0xFFFF
_MAX_GO_INT = 2**63 - 1
# tsaddr.TailscaleViaRange(): fd7a:115c:a1e0:b1a::/64, IPv4 routes tunnelled through IPv6 ("4via6").
_VIA_HIGH64 = 0xFD7A_115C_A1E0_0B1A


class PrefixError(ValueError):
    """A route the CLI refuses: `message` is the CLI's own sentence, `reason` what netip said (or "")."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class Prefix:
    """An IP prefix as Go's `netip.Prefix`: an address (IPv4, or IPv6 including IPv4-mapped) and a length."""

    __slots__ = ("value", "is4", "bits")

    def __init__(self, value: int, is4: bool, bits: int) -> None:
        self.value = value
        self.is4 = is4
        self.bits = bits

    @property
    def width(self) -> int:
        return 32 if self.is4 else 128

    def masked(self) -> Prefix:
        """The prefix with its host bits cleared (Go's `Prefix.Masked`)."""
        host = (1 << (self.width - self.bits)) - 1
        return Prefix(self.value & ~host, self.is4, self.bits)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Prefix):
            return NotImplemented
        return (self.value, self.is4, self.bits) == (other.value, other.is4, other.bits)

    def __hash__(self) -> int:
        return hash((self.value, self.is4, self.bits))

    def __str__(self) -> str:
        return f"{_format_addr(self.value, self.is4)}/{self.bits}"

    def __repr__(self) -> str:
        return f"Prefix({self})"


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _go_escape(char: str, quote: str) -> str:
    """One character as Go's strconv quoting writes it between `quote`s (Python's and Go's "printable" agree)."""
    code = ord(char)
    if char in _GO_ESCAPES:
        return _GO_ESCAPES[char]
    if char in (quote, "\\"):
        return "\\" + char
    if char.isprintable():
        return char
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def go_quote(text: str) -> str:
    """Go's `strconv.Quote` (`%q` of a string)."""
    return '"' + "".join(_go_escape(c, '"') for c in text) + '"'


def go_quote_rune(code: int) -> str:
    """Go's `strconv.QuoteRune` (`%q` of a rune, or of a byte, whose value is then the code point)."""
    return "'" + _go_escape(chr(code), "'") + "'"


def _addr_error(text: str, message: str, at: str = "") -> str:
    where = f" (at {go_quote(at)})" if at else ""
    return f"ParseAddr({go_quote(text)}): {message}{where}"


def _ipv4_fields(whole: str, part: str) -> list[int]:
    """Go's `parseIPv4Fields`: four decimal octets, no leading zeros, nothing else."""
    fields: list[int] = []
    value, digits = 0, 0
    for index, char in enumerate(part):
        if "0" <= char <= "9":
            if digits == 1 and value == 0:
                raise ValueError(_addr_error(whole, "IPv4 field has octet with leading zero"))
            value = value * 10 + ord(char) - ord("0")
            digits += 1
            if value > 255:
                raise ValueError(_addr_error(whole, "IPv4 field has value >255"))
        elif char == ".":
            if index == 0 or index == len(part) - 1 or part[index - 1] == ".":
                raise ValueError(_addr_error(whole, "IPv4 field must have at least one digit", part[index:]))
            if len(fields) == 3:
                raise ValueError(_addr_error(whole, "IPv4 address too long"))
            fields.append(value)
            value, digits = 0, 0
        else:
            raise ValueError(_addr_error(whole, "unexpected character", part[index:]))
    if len(fields) < 3:
        raise ValueError(_addr_error(whole, "IPv4 address too short"))
    return [*fields, value]


def _parse_ipv6(whole: str) -> tuple[int, bool]:
    """Go's `parseIPv6`; returns the address and whether it carried a zone."""
    text, _, zone = whole.partition("%")
    if "%" in whole and not zone:
        raise ValueError(_addr_error(whole, "zone must be a non-empty string"))
    groups: list[int] = []  # 16-bit words, with an embedded IPv4 counted as two
    ellipsis = -1
    s = text
    if s.startswith("::"):
        ellipsis = 0
        s = s[2:]
        if not s:
            return 0, bool(zone)
    while len(groups) < 8:
        digits = 0
        value = 0
        while digits < len(s) and s[digits] in "0123456789abcdefABCDEF":
            value = (value << 4) + int(s[digits], 16)
            if digits > 3:
                raise ValueError(_addr_error(whole, "each group must have 4 or less digits", s))
            digits += 1
        if digits == 0:
            raise ValueError(_addr_error(whole, "each colon-separated field must have at least one digit", s))
        if digits < len(s) and s[digits] == ".":
            if ellipsis < 0 and len(groups) != 6:
                raise ValueError(
                    _addr_error(
                        whole, "embedded IPv4 address must replace the final 2 fields of the address", s
                    )
                )
            if len(groups) + 2 > 8:
                raise ValueError(
                    _addr_error(
                        whole, "too many hex fields to fit an embedded IPv4 at the end of the address", s
                    )
                )
            a, b, c, d = _ipv4_fields(whole, s)
            groups += [(a << 8) | b, (c << 8) | d]
            s = ""
            break
        groups.append(value)
        s = s[digits:]
        if not s:
            break
        if s[0] != ":":
            raise ValueError(_addr_error(whole, "unexpected character, want colon", s))
        if len(s) == 1:
            raise ValueError(_addr_error(whole, "colon must be followed by more characters", s))
        s = s[1:]
        if s[0] == ":":
            if ellipsis >= 0:
                raise ValueError(_addr_error(whole, "multiple :: in address", s))
            ellipsis = len(groups)
            s = s[1:]
            if not s:
                break
    if s:
        raise ValueError(_addr_error(whole, "trailing garbage after address", s))
    if len(groups) < 8:
        if ellipsis < 0:
            raise ValueError(_addr_error(whole, "address string too short"))
        groups[ellipsis:ellipsis] = [0] * (8 - len(groups))
    elif ellipsis >= 0:
        raise ValueError(_addr_error(whole, "the :: must expand to at least one field of zeros"))
    value = 0
    for group in groups:
        value = (value << 16) | group
    return value, bool(zone)


def parse_prefix(text: str) -> Prefix:
    """Go's `netip.ParsePrefix`; ValueError with Go's message (`netip.ParsePrefix("..."): ...`)."""

    def fail(message: str) -> ValueError:
        return ValueError(f"netip.ParsePrefix({go_quote(text)}): {message}")

    slash = text.rfind("/")
    if slash < 0:
        raise fail("no '/'")
    addr, bits_text = text[:slash], text[slash + 1 :]
    # ParseAddr picks the family from the first '.' or ':' it meets.
    family = next((c for c in addr if c in ".:%"), "")
    try:
        if family == ".":
            a, b, c, d = _ipv4_fields(addr, addr)
            value, is4 = (a << 24) | (b << 16) | (c << 8) | d, True
        elif family == ":":
            value, zoned = _parse_ipv6(addr)
            is4 = False
            if zoned:
                raise fail("IPv6 zones cannot be present in a prefix")
        elif family == "%":
            raise ValueError(_addr_error(addr, "missing IPv6 address"))
        else:
            raise ValueError(_addr_error(addr, "unable to parse IP"))
    except ValueError as error:
        if str(error).startswith("netip."):
            raise
        raise fail(str(error)) from None
    # strconv.Atoi would take a sign and leading zeros; ParsePrefix does not.
    if len(bits_text) > 1 and not "1" <= bits_text[0] <= "9":
        raise fail(f"bad bits after slash: {go_quote(bits_text)}")
    if not bits_text or not all("0" <= c <= "9" for c in bits_text):
        raise fail(f"bad bits after slash: {go_quote(bits_text)}")
    bits = int(bits_text)
    if bits > _MAX_GO_INT:  # strconv.Atoi's range error
        raise fail(f"bad bits after slash: {go_quote(bits_text)}")
    if bits > (32 if is4 else 128):
        raise fail("prefix length out of range")
    return Prefix(value, is4, bits)


ALL_IPV4 = Prefix(0, True, 0)
ALL_IPV6 = Prefix(0, False, 0)


def _check_via(prefix: Prefix) -> None:
    """netutil's `validateViaPrefix`: a 4via6 route is at least a /96 with a 16-bit site ID."""
    if prefix.bits < 96:
        raise PrefixError(f"{prefix} 4-in-6 prefix must be at least a /96")
    site = (prefix.value >> 32) & 0xFFFF_FFFF
    if site > _MAX16:
        raise PrefixError(f"route {prefix} contains invalid site ID {site:08x}; must be 0xffff or less")


def parse_route(text: str) -> Prefix:
    """One `--advertise-routes` item as the CLI checks it: a prefix with no host bits, a sound 4via6 route.

    Raises PrefixError with the CLI's own sentence (and netip's reason when the text is no prefix).
    """
    try:
        prefix = parse_prefix(text)
    except ValueError as error:
        raise PrefixError(f"{go_quote(text)} is not a valid IP address or CIDR prefix", str(error)) from None
    if prefix != prefix.masked():
        raise PrefixError(f"{prefix} has non-address bits set; expected {prefix.masked()}")
    if not prefix.is4 and prefix.value >> 64 == _VIA_HIGH64:
        _check_via(prefix)
    return prefix


def calc_advertise_routes(routes: Iterable[str], exit_node: bool) -> list[Prefix]:
    """The CLI's `netutil.CalcAdvertiseRoutes`: the routes to advertise, sorted as the CLI sorts them.

    + routes: the route texts (the CLI splits its `--advertise-routes` value on commas)
    + exit_node: whether `--advertise-exit-node` is given (adds 0.0.0.0/0 and ::/0)

    Raises PrefixError with the CLI's own sentence.
    """
    found = dict.fromkeys(parse_route(text) for text in routes)
    if ALL_IPV4 in found and ALL_IPV6 not in found:
        raise PrefixError(
            f"{ALL_IPV4} advertised without its IPv6 counterpart, please also advertise {ALL_IPV6}"
        )
    if ALL_IPV6 in found and ALL_IPV4 not in found:
        raise PrefixError(
            f"{ALL_IPV6} advertised without its IPv4 counterpart, please also advertise {ALL_IPV4}"
        )
    if exit_node:
        found[ALL_IPV4] = found[ALL_IPV6] = None
    # Shorter prefixes first, then IPv4 before IPv6, then by address (Go's Addr.Less).
    return sorted(found, key=lambda p: (p.bits, not p.is4, p.value))


def _format_addr(value: int, is4: bool) -> str:
    """Go's `Addr.String`: dotted IPv4, `::ffff:a.b.c.d` for IPv4-mapped, else RFC 5952."""
    if is4:
        return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))
    if value >> 32 == 0xFFFF:
        return "::ffff:" + _format_addr(value & 0xFFFF_FFFF, True)
    words = [(value >> (112 - 16 * i)) & _MAX16 for i in range(8)]
    # The longest run of two or more zero words becomes "::" (the first, on a tie).
    start, end = 8, 8
    for i in range(8):
        j = i
        while j < 8 and words[j] == 0:
            j += 1
        if j - i >= 2 and j - i > end - start:
            start, end = i, j
    if start == 8:
        return ":".join(f"{w:x}" for w in words)
    head = ":".join(f"{w:x}" for w in words[:start])
    tail = ":".join(f"{w:x}" for w in words[end:])
    return f"{head}::{tail}"
