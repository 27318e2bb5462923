"""Add one path to the `imports` list of a NixOS configuration.nix, changing nothing else.

The edit is textual and minimal: every other byte, comments and formatting included, stays as it was. A small
Nix tokenizer (comments, strings with interpolation, brackets) finds the module's top-level attribute set and
its `imports` list; shapes it cannot edit with certainty are refused with the line to add by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

_PUNCTUATION = set("{}[]();=:,@")


class ImportEditError(ValueError):
    """configuration.nix has a shape that cannot be edited safely."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "punct", "string", "comment"
    text: str
    start: int
    end: int


def _skip_interpolation(source: str, index: int) -> int:
    """From just after `${`, the index just after the matching `}`."""
    depth = 1
    while index < len(source):
        char = source[index]
        if char in "\"'" or source.startswith("''", index) or char == "#" or source.startswith("/*", index):
            token_end = _lex_one(source, index)
            if token_end is not None:
                index = token_end[1]
                continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    raise ImportEditError("unterminated ${ ... } interpolation")


def _skip_string(source: str, index: int) -> int:
    """From the opening quote of a "string", the index just after the closing quote."""
    index += 1
    while index < len(source):
        char = source[index]
        if char == "\\":
            index += 2
            continue
        if source.startswith("${", index):
            index = _skip_interpolation(source, index + 2)
            continue
        if char == '"':
            return index + 1
        index += 1
    raise ImportEditError("unterminated string")


def _skip_indented_string(source: str, index: int) -> int:
    """From the opening '' of an indented string, the index just after its closing ''."""
    index += 2
    while index < len(source):
        if source.startswith("''", index):
            following = source[index + 2 : index + 3]
            if following in ("'", "$"):
                index += 3
                continue
            if following == "\\":
                index += 4
                continue
            return index + 2
        if source.startswith("${", index):
            index = _skip_interpolation(source, index + 2)
            continue
        index += 1
    raise ImportEditError("unterminated '' string")


def _lex_one(source: str, index: int) -> tuple[str, int] | None:
    """The kind and end of a comment or string starting at `index`, if one starts there."""
    if source[index] == "#":
        end = source.find("\n", index)
        return "comment", len(source) if end < 0 else end
    if source.startswith("/*", index):
        end = source.find("*/", index + 2)
        if end < 0:
            raise ImportEditError("unterminated /* comment")
        return "comment", end + 2
    if source[index] == '"':
        return "string", _skip_string(source, index)
    if source.startswith("''", index):
        return "string", _skip_indented_string(source, index)
    return None


def tokenize(source: str) -> list[_Token]:
    """Split Nix source into words, punctuation, strings and comments (whitespace dropped)."""
    tokens: list[_Token] = []
    index = 0
    while index < len(source):
        char = source[index]
        if char.isspace():
            index += 1
            continue
        lexed = _lex_one(source, index)
        if lexed is not None:
            kind, end = lexed
            tokens.append(_Token(kind, source[index:end], index, end))
            index = end
            continue
        if source.startswith("${", index):
            tokens.append(_Token("punct", "{", index, index + 2))
            index += 2
            continue
        if char in _PUNCTUATION:
            tokens.append(_Token("punct", char, index, index + 1))
            index += 1
            continue
        end = index
        while end < len(source):
            c = source[end]
            if c.isspace() or c in _PUNCTUATION or c in '"#' or source.startswith("''", end):
                break
            if source.startswith("/*", end):
                break
            end += 1
        tokens.append(_Token("word", source[index:end], index, end))
        index = end
    return tokens


def _matching(tokens: list[_Token], open_index: int) -> int:
    pairs = {"{": "}", "[": "]", "(": ")"}
    depth = 0
    for position in range(open_index, len(tokens)):
        token = tokens[position]
        if token.kind != "punct":
            continue
        if token.text in pairs:
            depth += 1
        elif token.text in pairs.values():
            depth -= 1
            if depth == 0:
                return position
    raise ImportEditError("unbalanced brackets")


def _is(token: _Token | None, kind: str, text: str | None = None) -> bool:
    return token is not None and token.kind == kind and (text is None or token.text == text)


def _body_start(tokens: list[_Token]) -> int:
    """Index of the `{` that opens the module's top-level attribute set."""
    position = 0
    # Function headers: `{ config, ... }:`, `args@{ ... }:`, `{ ... }@args:`, `args:`.
    while True:
        token = tokens[position] if position < len(tokens) else None
        if _is(token, "punct", "{"):
            close = _matching(tokens, position)
            after = tokens[close + 1] if close + 1 < len(tokens) else None
            if _is(after, "punct", ":"):
                position = close + 2
                continue
            if _is(after, "punct", "@") and close + 3 < len(tokens) and _is(tokens[close + 3], "punct", ":"):
                position = close + 4
                continue
            return position
        if _is(token, "word") and position + 1 < len(tokens):
            following = tokens[position + 1]
            if _is(following, "punct", ":"):
                position += 2
                continue
            if _is(following, "punct", "@"):
                position += 2
                continue
            if token is not None and token.text == "let":
                position = _after_let(tokens, position)
                continue
        raise ImportEditError("the file is not a module that returns an attribute set { ... }")


def _after_let(tokens: list[_Token], position: int) -> int:
    depth = 0
    for index in range(position, len(tokens)):
        token = tokens[index]
        if token.kind != "word":
            continue
        if token.text == "let":
            depth += 1
        elif token.text == "in":
            depth -= 1
            if depth == 0:
                return index + 1
    raise ImportEditError("a let without its in")


def _line_start(source: str, offset: int) -> int:
    return source.rfind("\n", 0, offset) + 1


def _indent_of_line(source: str, offset: int) -> str:
    start = _line_start(source, offset)
    end = start
    while end < len(source) and source[end] in " \t":
        end += 1
    return source[start:end]


def _starts_its_line(source: str, offset: int) -> bool:
    return source[_line_start(source, offset) : offset].strip() == ""


def manual_instruction(import_path: str, file_name: str = "configuration.nix") -> str:
    """What a person adds by hand when the file cannot be edited automatically."""
    return f"add {import_path} to the imports list of {file_name}, for example: imports = [ {import_path} ];"


def has_import(source: str, import_path: str) -> bool:
    """Whether the top-level `imports` list already names `import_path` (comments do not count)."""
    tokens = [t for t in tokenize(source) if t.kind != "comment"]
    located = _find_imports(tokens)
    if located is None:
        return False
    open_index, close_index = located
    return any(_is(t, "word", import_path) for t in tokens[open_index + 1 : close_index])


def _find_imports(tokens: list[_Token]) -> tuple[int, int] | None:
    """Token indices of the `[` and `]` of the top-level imports list, or None when there is none."""
    body = _body_start(tokens)
    body_end = _matching(tokens, body)
    if body_end != len(tokens) - 1:
        raise ImportEditError("the attribute set is followed by more expression (// or a function call)")
    position = body + 1
    statement_start = True
    while position < body_end:
        token = tokens[position]
        if statement_start and _is(token, "word", "imports"):
            if not _is(tokens[position + 1], "punct", "="):
                raise ImportEditError("imports is not a plain `imports = [ ... ];`")
            if not _is(tokens[position + 2], "punct", "["):
                raise ImportEditError("imports is not a literal list")
            close = _matching(tokens, position + 2)
            if not _is(tokens[close + 1], "punct", ";"):
                raise ImportEditError("imports is a list expression (++ or a function), not a literal list")
            return position + 2, close
        if token.kind == "punct" and token.text in "{[(":
            position = _matching(tokens, position) + 1
            statement_start = False
            continue
        statement_start = _is(token, "punct", ";")
        position += 1
    return None


def add_import(source: str, import_path: str) -> str:
    """`source` with `import_path` added to its top-level imports list; unchanged if already there.

    + source: the text of a NixOS module such as configuration.nix
    + import_path: a relative path like `./tailscale-autoconnect.nix`

    Raises ImportEditError when the file's shape does not allow a certain, minimal edit.
    """
    all_tokens = tokenize(source)
    tokens = [t for t in all_tokens if t.kind != "comment"]
    if not tokens:
        raise ImportEditError("the file is empty")
    located = _find_imports(tokens)
    if located is None:
        body = tokens[_body_start(tokens)]
        first_inside = next((t for t in all_tokens if t.start >= body.end), None)
        same_line = first_inside is not None and "\n" not in source[body.end : first_inside.start]
        if first_inside is None or same_line:
            return f"{source[: body.end]} imports = [ {import_path} ];{source[body.end :]}"
        indent = _indent_of_line(source, first_inside.start) if first_inside.text != "}" else "  "
        if first_inside.text == "}":
            indent = _indent_of_line(source, body.start) + "  "
        line_end = source.index("\n", body.end) + 1
        return f"{source[:line_end]}{indent}imports = [ {import_path} ];\n{source[line_end:]}"

    open_index, close_index = located
    elements = tokens[open_index + 1 : close_index]
    if any(_is(t, "word", import_path) for t in elements):
        return source
    opening, closing = tokens[open_index], tokens[close_index]
    if not elements:
        if _starts_its_line(source, closing.start) and "\n" in source[opening.end : closing.start]:
            indent = _indent_of_line(source, closing.start) + "  "
            line_start = _line_start(source, closing.start)
            return f"{source[:line_start]}{indent}{import_path}\n{source[line_start:]}"
        gap = source[opening.end : closing.start]
        trailing = gap or " "
        return f"{source[: opening.end]} {import_path}{trailing}{source[closing.start :]}"
    last = elements[-1]
    if _starts_its_line(source, closing.start):
        indent = _indent_of_line(source, last.start)
        if not _starts_its_line(source, last.start) and _line_start(source, last.start) == _line_start(
            source, opening.start
        ):
            indent = _indent_of_line(source, closing.start) + "  "
        line_start = _line_start(source, closing.start)
        return f"{source[:line_start]}{indent}{import_path}\n{source[line_start:]}"
    return f"{source[: last.end]} {import_path}{source[last.end :]}"


def remove_import(source: str, import_path: str, *, original: str | None = None) -> str:
    """`source` without `import_path` in its top-level imports list: the reverse of `add_import`.

    + original: the file as it was before the import was added (a deploy keeps a copy); used as it is
      when adding the import to it gives exactly `source`, so the file comes back byte for byte

    What `add_import` wrote is taken out again: the entry, its line when it had one of its own, or the
    whole `imports = [ ... ];` it added to a module that had none. Every other byte stays. A `[ ]` that
    got the entry and a list that tailnix added whole read the same; without `original` the list goes.
    Raises ImportEditError for a shape `add_import` refuses.
    """
    if original is not None:
        try:
            if add_import(original, import_path) == source:
                return original
        except ImportEditError:
            pass
    tokens = [t for t in tokenize(source) if t.kind != "comment"]
    if not tokens:
        raise ImportEditError("the file is empty")
    located = _find_imports(tokens)
    if located is None:
        return source
    open_index, close_index = located
    entries = [t for t in tokens[open_index + 1 : close_index] if _is(t, "word", import_path)]
    if not entries:
        return source
    if close_index - open_index == 2:
        statement = _whole_statement(source, tokens, open_index, close_index)
        if statement is not None:
            return source[: statement[0]] + source[statement[1] :]
    start, end = _entry_span(source, entries[-1])
    return remove_import(source[:start] + source[end:], import_path)


def _whole_statement(
    source: str, tokens: list[_Token], open_index: int, close_index: int
) -> tuple[int, int] | None:
    """The span of an `imports = [ X ];` that `add_import` added to a module without imports, if it is one."""
    name, semicolon = tokens[open_index - 2], tokens[close_index + 1]
    if source[name.start : semicolon.end] != f"imports = [ {tokens[open_index + 1].text} ];":
        return None
    body = tokens[open_index - 3]
    if not _is(body, "punct", "{"):
        return None
    if source[body.end : name.start] == " ":
        return body.end, semicolon.end  # `{ imports = [ X ]; ...` on the `{` line
    line_start = _line_start(source, name.start)
    line_end = source.find("\n", semicolon.end)
    if (
        _starts_its_line(source, name.start)
        and line_end == semicolon.end
        and source[body.end : line_start].strip() == ""
    ):
        return line_start, line_end + 1  # its own line, first under the `{` line
    return None


def _entry_span(source: str, entry: _Token) -> tuple[int, int]:
    """The text to cut for one list entry: its line when it has the line alone, else it and one side's blanks."""
    line_start = _line_start(source, entry.start)
    line_end = source.find("\n", entry.end)
    line_end = len(source) if line_end < 0 else line_end
    if _starts_its_line(source, entry.start):
        if source[entry.end : line_end].strip() == "":
            return line_start, min(line_end + 1, len(source))
        end = entry.end
        while end < line_end and source[end] in " \t":
            end += 1
        return entry.start, end
    start = entry.start
    while start > line_start and source[start - 1] in " \t":
        start -= 1
    return start, entry.end


def remove_entry(source: str, path: str) -> str:
    """`source` without the path `path` wherever it is a word (in flake.nix, an entry of a `modules` list).

    Each entry goes with its line when it has the line alone, otherwise with the blanks before it (or,
    first on its line, after it); comments and strings that name it stay.
    """
    for token in reversed([t for t in tokenize(source) if _is(t, "word", path)]):
        start, end = _entry_span(source, token)
        source = source[:start] + source[end:]
    return source
