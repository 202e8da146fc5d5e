"""The text a person sees when a mail client shows an HTML part, read in one bounded pass.

Spam hides from filters in HTML: words a reader never sees (``display:none``, ``font-size:0``, white on white,
comments, ``<head>``) padded with ordinary vocabulary, and words a reader does see split by comments or empty tags
(``fr<!-- -->ee``). `html_text` keeps what is rendered and drops what is not, so the model reads what the
person reads.

Why not a library: the standard library's `html.parser` takes 68 s on 200 KB of ``<a``; selectolax 1.0.2
(lexbor) took 84 s on 100,000 nested ``<div>`` and 16 s on 30,000 ``<b id=N>`` followed by 3,000 paragraphs;
lxml 6.1.3 is linear but stops building at depth 256 and silently drops the rest of the document (text an
attacker would place there), and adds 12 MB to a mail host. This tokenizer finds every ``<``, ``>`` and
quote with `str.find`/compiled regular expressions that never rescan, keeps an element stack of at most
`MAX_DEPTH`, and does O(1) work per tag, so its time is linear in the input (see docs/robustness.md for
figures). It is not a full HTML5 tree builder: it implements the implied end tags that decide visibility in
mail (``<p>``, ``<li>``, table cells, ``<head>``, nested ``<a>``), and where it cannot follow the browser it
errs towards showing text.

What is dropped: comments, ``<head>`` (until ``<body>`` or body content starts), ``<script>``, ``<style>``,
``<template>``, ``<title>``, ``<iframe>``/``<noembed>``/``<noframes>``/``<xmp>`` content, elements with the
``hidden`` attribute, and elements whose inline style hides them: ``display:none``, ``visibility:hidden``
(undone by a descendant's ``visibility:visible``), ``opacity:0``, a font size below `MIN_FONT_PX`, zero
height/width with ``overflow:hidden``, absolute positioning far off-screen, and text whose colour is within
`COLOR_TOLERANCE` of the background stated by the element or an ancestor (``bgcolor``, ``background-color``, the
``background`` shorthand; an unstated page background is not assumed, and a background image makes it unknown).
Stylesheets (``<style>`` rules, classes) are not applied."""

from __future__ import annotations

import html as html_lib
import re
from typing import NamedTuple

MAX_HTML_CHARS = 1 << 20  # of markup read; a mail part is cut well below this before it gets here
MAX_TAGS = 25_000  # read one by one (a large newsletter has a few thousand); the rest is read unstyled
MAX_DEPTH = 256  # open elements tracked; a deeper one replaces the innermost (browsers cap depth too)
MAX_ATTR_CHARS = 8192  # of one tag read for attributes; the rest of a longer tag is ignored
MIN_FONT_PX = 4.0  # text set smaller than this is unreadable: treated as hidden
COLOR_TOLERANCE = 16  # largest difference per RGB channel at which text and background count as equal
DEFAULT_FONT_PX = 16.0


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_VOID = _names("area base basefont bgsound br col embed frame hr img input keygen link meta param source track wbr")
_BLOCKS = _names(
    "address article aside blockquote br caption center dd details dialog dir div dl dt fieldset figcaption figure "
    "footer form h1 h2 h3 h4 h5 h6 header hr legend li main menu nav ol p pre section summary table td th tr ul"
)
# Content never rendered, skipped as raw text up to its end tag (title is RCDATA, but it is not shown either).
_RAW_HIDDEN = _names("script style title iframe noembed noframes xmp")
_RAW_VISIBLE = _names("textarea")  # RCDATA shown as text
_HIDDEN_ELEMENTS = _names("template head")
_V1_HIDDEN = _HIDDEN_ELEMENTS | {"noscript"}  # what text version 1 dropped besides the raw-text elements
# Elements allowed inside <head>; any other start tag, or text that is not whitespace, starts the body.
_HEAD_CONTENT = _names("base basefont bgsound link meta title noscript noframes style script template")
# HTML5: these start tags close an open <p> (up to a scope boundary).
_CLOSES_P = _names(
    "address article aside blockquote center details dialog dir div dl fieldset figcaption figure footer form "
    "h1 h2 h3 h4 h5 h6 header hr main menu nav ol p pre section summary table ul li dd dt"
)
_SCOPE = _names("applet caption html table td th marquee object template button")
# start tag -> the open elements it implicitly closes, and the elements that stop the search
_IMPLIED = {
    "li": (frozenset(("li",)), frozenset(("ul", "ol")) | _SCOPE),
    "dt": (frozenset(("dt", "dd")), frozenset(("dl",)) | _SCOPE),
    "dd": (frozenset(("dt", "dd")), frozenset(("dl",)) | _SCOPE),
    "tr": (frozenset(("tr", "td", "th")), frozenset(("table", "tbody", "thead", "tfoot", "html"))),
    "td": (frozenset(("td", "th")), frozenset(("tr", "table", "html"))),
    "th": (frozenset(("td", "th")), frozenset(("tr", "table", "html"))),
    "option": (frozenset(("option",)), frozenset(("select", "datalist", "html"))),
    "a": (frozenset(("a",)), _SCOPE),
}
_P = frozenset(("p",))
_HEADINGS = frozenset(f"h{level}" for level in range(1, 7))
# The 16 colours of HTML 4 (the ones legacy `<font color>` mail uses) and transparent; other names are unknown.
_NAMED_COLORS = {
    "black": (0, 0, 0), "silver": (192, 192, 192), "gray": (128, 128, 128), "grey": (128, 128, 128),
    "white": (255, 255, 255), "maroon": (128, 0, 0), "red": (255, 0, 0), "purple": (128, 0, 128),
    "fuchsia": (255, 0, 255), "green": (0, 128, 0), "lime": (0, 255, 0), "olive": (128, 128, 0),
    "yellow": (255, 255, 0), "navy": (0, 0, 128), "blue": (0, 0, 255), "teal": (0, 128, 128),
    "aqua": (0, 255, 255),
}  # fmt: skip
_TRANSPARENT = "transparent"
_UNKNOWN = "unknown"  # a background image: what is behind the text cannot be known
_FONT_KEYWORDS = {
    "xx-small": 9.0, "x-small": 10.0, "small": 13.0, "medium": 16.0, "large": 18.0, "x-large": 24.0,
    "xx-large": 32.0, "xxx-large": 48.0,
}  # fmt: skip

# The common tag in one match: quoted values without '<' or '>' in them. Every scan stops at the next '<', so
# trying this at each '<' stays linear; anything else goes through `_markup`.
_SIMPLE_TAG = re.compile(
    r"""<(/?)([A-Za-z][^\t\n\f\r />]*)"""
    r"""((?:[^<>"'=]|=[ \t\n\f\r]*"[^"<>]*"|=[ \t\n\f\r]*'[^'<>]*'|=(?![ \t\n\f\r]*["']))*)>"""
)
_SPECIAL = _RAW_HIDDEN | _RAW_VISIBLE | {"body", "plaintext"}  # tags `_markup` handles itself
# Attributes that can change visibility; a tag with none of them inherits its parent's state unread.
_STYLING = re.compile(r"style|hidden|color|background|text", re.IGNORECASE)
_ANY_MARKUP = re.compile(r"<!--[^<>]*-->|</?[A-Za-z!?][^<>]*>")  # every scan stops at the next '<' or '>'
_TAG_NAME = re.compile(r"[A-Za-z][^\t\n\f\r />]*")
_TAG_STOP = re.compile(r"[>=]")
_SPACES = re.compile(r"[ \t\n\f\r]*")
_ATTR = re.compile(r"""([^\t\n\f\r "'>/=]+)(?:[ \t\n\f\r]*=[ \t\n\f\r]*(?:"([^"]*)"|'([^']*)'|([^\t\n\f\r >]*)))?""")
_HTML_SPACE = re.compile(r"[ \t\n\f\r]+")
_RAW_END = {name: re.compile(rf"</{name}[\t\n\f\r />]", re.IGNORECASE) for name in _RAW_HIDDEN | _RAW_VISIBLE}
_NUMBER = re.compile(r"(-?[0-9]*\.?[0-9]+)\s*([a-z%]*)")
_HEX = re.compile(r"#?([0-9a-f]{3,8})")
_RGB = re.compile(r"rgba?\(([^)]*)\)")

Color = tuple[int, int, int] | str | None  # RGB, _TRANSPARENT, _UNKNOWN, or None (not stated)


class _State(NamedTuple):
    """What an element passes to its content: whether it is hidden and the style its text inherits."""

    hidden: bool  # display:none and its kind: nothing inside can show again
    invisible: bool  # visibility:hidden: a descendant may set visibility:visible
    background: Color
    color: Color
    font_px: float


# The page's own background is not assumed to be white: a stylesheet or a client's dark mode may paint it, and
# white text on a class-styled dark cell is ordinary newsletter design. Only a stated background counts.
_ROOT = _State(False, False, None, None, DEFAULT_FONT_PX)


def html_text(html: str, *, max_chars: int, visible_only: bool = True) -> str:
    """The rendered text of `html`, at most about `max_chars` long: tags dropped, entities decoded once, block
    elements as line breaks, HTML whitespace collapsed. `visible_only=False` keeps text hidden by styles and
    attributes (the extraction of text version 1, for the robustness benchmark's comparison model only)."""
    return _Reader(html[:MAX_HTML_CHARS], max_chars, visible_only).read()[:max_chars]


class _Reader:
    def __init__(self, html: str, max_chars: int, visible_only: bool) -> None:
        self.html = html
        self.max_chars = max_chars
        self.visible_only = visible_only
        self.out: list[str] = []
        self.size = 0
        self.stack: list[tuple[str, _State]] = []
        self.open: dict[str, int] = {}  # name -> how many of the stack's elements have it (O(1) end tag checks)
        self.foreign = 0  # open <svg>/<math>: there `<x/>` closes itself
        self.states: dict[tuple[str, str, _State], _State] = {}

    # --- the stack -------------------------------------------------------------------------------------------
    def _state(self) -> _State:
        return self.stack[-1][1] if self.stack else _ROOT

    def _push(self, name: str, state: _State) -> None:
        if len(self.stack) >= MAX_DEPTH:
            self._pop()  # the new element becomes the innermost one's sibling
        self.stack.append((name, state))
        self.open[name] = self.open.get(name, 0) + 1
        if name in ("svg", "math"):
            self.foreign += 1

    def _pop(self) -> str:
        name, state = self.stack.pop()
        self.open[name] -= 1
        if name in ("svg", "math"):
            self.foreign -= 1
        if name in _BLOCKS and not self._hides(state):
            self._emit_break()
        return name

    def _pop_through(self, name: str) -> None:
        while self.stack and self._pop() != name:
            pass

    def _close_implied(self, targets: frozenset[str], boundaries: frozenset[str]) -> None:
        """Close the innermost open element of `targets` unless a boundary element is open inside it."""
        for target in targets:
            if self.open.get(target):
                break
        else:
            return
        for index in range(len(self.stack) - 1, -1, -1):
            open_name = self.stack[index][0]
            if open_name in targets:
                while len(self.stack) > index:
                    self._pop()
                return
            if open_name in boundaries:
                return

    # --- output ----------------------------------------------------------------------------------------------
    @staticmethod
    def _hides(state: _State) -> bool:
        return state.hidden or state.invisible or state.font_px < MIN_FONT_PX or _same_color(state)

    def _emit_break(self) -> None:
        self.out.append("\n")
        self.size += 1

    def _text(self, raw: str) -> None:
        if self.open.get("head") and raw.strip(" \t\n\f\r"):
            self._pop_through("head")  # text in <head> starts the body (HTML5 "in head", anything else)
        state = self._state()
        if self._hides(state):
            return
        text = _HTML_SPACE.sub(" ", html_lib.unescape(raw))
        self.out.append(text)
        self.size += len(text)

    # --- tags ------------------------------------------------------------------------------------------------
    def _start(self, name: str, attrs: str, self_closing: bool) -> None:
        if self.open.get("head") and name not in _HEAD_CONTENT:
            self._pop_through("head")
        if name in _CLOSES_P and self.open.get("p"):
            self._close_implied(_P, _SCOPE)
        if name in _HEADINGS and self.stack and self.stack[-1][0] in _HEADINGS:
            self._pop()
        implied = _IMPLIED.get(name)
        if implied is not None:
            self._close_implied(*implied)
        parent = self.stack[-1][1] if self.stack else _ROOT
        if not self.visible_only:
            state = parent._replace(hidden=True) if name in _V1_HIDDEN else parent
        elif name in _HIDDEN_ELEMENTS or (attrs and _STYLING.search(attrs, 0, MAX_ATTR_CHARS)):
            key = (name, attrs, parent)
            state = self.states.get(key)  # mail repeats its styled tags: read each distinct one once
            if state is None:
                state = self.states[key] = self._element_state(name, attrs, parent)
        else:
            state = parent
        if name in _VOID or (self_closing and self.foreign):
            if name in ("br", "hr") and not self._hides(state):
                self._emit_break()
            return
        if name in _BLOCKS and not self._hides(state):
            self._emit_break()
        self._push(name, state)

    def _body_start(self, attrs: str) -> None:
        if self.open.get("head"):
            self._pop_through("head")
        if attrs and self.visible_only:
            self._push("body", self._element_state("body", attrs, self._state()))

    def _end(self, name: str) -> None:
        if name == "br":
            self._emit_break()  # HTML5 reads </br> as <br>
        elif self.open.get(name):
            self._pop_through(name)

    def _element_state(self, name: str, attrs: str, parent: _State) -> _State:
        hidden = parent.hidden or name in _HIDDEN_ELEMENTS
        invisible, background, color, font_px = parent.invisible, parent.background, parent.color, parent.font_px
        values = _attributes(attrs[:MAX_ATTR_CHARS]) if attrs else {}
        if "hidden" in values:
            hidden = True
        if "bgcolor" in values:
            background = _parse_color(values["bgcolor"], legacy=True) or background
        if "background" in values:
            background = _UNKNOWN  # an image URL
        if "color" in values and name == "font":
            color = _parse_color(values["color"], legacy=True) or color
        if "text" in values and name == "body":
            color = _parse_color(values["text"], legacy=True) or color
        style = values.get("style")
        if style:
            rules = _declarations(style)
            display = rules.get("display")
            if display == "none" or _zero(rules.get("opacity")) or _clipped(rules) or _offscreen(rules):
                hidden = True
            visibility = rules.get("visibility")
            if visibility in ("hidden", "collapse"):
                invisible = True
            elif visibility == "visible":
                invisible = False
            if "font-size" in rules:
                font_px = _font_px(rules["font-size"], parent.font_px)
            if "color" in rules:
                color = _parse_color(rules["color"]) or color
            if "background-color" in rules:
                background = _parse_color(rules["background-color"]) or background
            if "background" in rules:
                background = _background(rules["background"]) or background
            if "background-image" in rules and "url(" in rules["background-image"]:
                background = _UNKNOWN
        return _State(hidden, invisible, background, color, font_px)

    # --- the scan --------------------------------------------------------------------------------------------
    def read(self) -> str:
        html, n = self.html, len(self.html)
        pos = 0
        tags = 0
        while pos < n and self.size < self.max_chars:
            tags += 1
            if tags > MAX_TAGS:
                self._rest_unstyled(pos)
                break
            lt = html.find("<", pos)
            if lt < 0:
                lt = n
            if lt > pos:
                self._text(html[pos:lt])
            if lt >= n:
                break
            simple = _SIMPLE_TAG.match(html, lt)
            if simple is None or simple.group(2).lower() in _SPECIAL:
                pos = self._markup(lt)
            elif simple.group(1):
                self._end(simple.group(2).lower())
                pos = simple.end()
            else:
                attrs = simple.group(3)
                self._start(simple.group(2).lower(), attrs.strip(" \t\n\f\r"), attrs.endswith("/"))
                pos = simple.end()
        return "".join(self.out)

    def _rest_unstyled(self, pos: int) -> None:
        """Past `MAX_TAGS`, the rest is read in one regular-expression pass: tags and comments removed, nothing
        hidden. Text an attacker buries behind tens of thousands of tags is still read, not lost."""
        rest = _ANY_MARKUP.sub("", self.html[pos:])
        text = _HTML_SPACE.sub(" ", html_lib.unescape(rest[: 8 * self.max_chars]))
        self.out.append(text)
        self.size += len(text)

    def _markup(self, lt: int) -> int:
        """Handle the markup that starts at `lt` (a '<'); return where reading goes on."""
        html, n = self.html, len(self.html)
        following = html[lt + 1 : lt + 2]
        if following == "!":
            if html.startswith("<!--", lt):
                if html.startswith("<!-->", lt) or html.startswith("<!--->", lt):  # HTML5: abruptly closed
                    return html.find(">", lt + 4) + 1
                end = html.find("-->", lt + 4)
                return n if end < 0 else end + 3
            return _after(html, ">", lt + 2)  # doctype, CDATA, bogus comment
        if following == "?":
            return _after(html, ">", lt + 2)
        if following == "/":
            match = _TAG_NAME.match(html, lt + 2)
            if match is None:
                return lt + 3 if html.startswith(">", lt + 2) else _after(html, ">", lt + 2)
            end = _tag_end(html, match.end())
            if end < 0:
                return n  # EOF in a tag: HTML5 drops it
            self._end(match.group().lower())
            return end + 1
        match = _TAG_NAME.match(html, lt + 1)
        if match is None:
            self._text("<")  # a lone '<' is text
            return lt + 1
        end = _tag_end(html, match.end())
        if end < 0:
            return n
        name = match.group().lower()
        attrs = html[match.end() : end]
        if name == "body":
            self._body_start(attrs)
            return end + 1
        self._start(name, attrs.strip(" \t\n\f\r"), attrs.endswith("/"))
        if name in _RAW_HIDDEN or name in _RAW_VISIBLE:
            close = _RAW_END[name].search(html, end + 1)
            content_end = n if close is None else close.start()
            if name in _RAW_VISIBLE:
                self._text(html[end + 1 : content_end])
            if self.open.get(name):
                self._pop_through(name)
            return n if close is None else _after(html, ">", close.end() - 1)
        if name == "plaintext":
            self._text(html_lib.escape(html[end + 1 :], quote=False))  # the rest is literal text
            return n
        return end + 1


def _after(html: str, char: str, start: int) -> int:
    found = html.find(char, start)
    return len(html) if found < 0 else found + 1


def _tag_end(html: str, pos: int) -> int:
    """Index of the '>' that ends the tag whose attributes start at `pos`, or -1 at the end of input. As in
    HTML5, a '>' inside a quoted attribute value does not end the tag; a quote only opens a value after '='."""
    n = len(html)
    while True:
        stop = _TAG_STOP.search(html, pos)
        if stop is None:
            return -1
        index = stop.start()
        if html[index] == ">":
            return index
        value = _SPACES.match(html, index + 1).end()
        if value < n and html[value] in "\"'":
            close = html.find(html[value], value + 1)
            if close < 0:
                return -1
            pos = close + 1
        else:
            pos = value


def _attributes(text: str) -> dict[str, str]:
    """Attribute names (lower case) to values with entities decoded once; the first of a repeated name wins."""
    values: dict[str, str] = {}
    for match in _ATTR.finditer(text):
        name = match.group(1).lower()
        if name not in values:
            raw = next((g for g in match.groups()[1:] if g is not None), "")
            values[name] = html_lib.unescape(raw)
    return values


def _declarations(style: str) -> dict[str, str]:
    """An inline style as property -> value (lower case, `!important` dropped, comments removed, last wins)."""
    parts = []
    pos = 0
    while True:  # CSS comments, removed without a regex that could rescan an unclosed `/*`
        start = style.find("/*", pos)
        if start < 0:
            parts.append(style[pos:])
            break
        parts.append(style[pos:start])
        end = style.find("*/", start + 2)
        if end < 0:
            break
        pos = end + 2
    rules = {}
    for declaration in "".join(parts).lower().split(";"):
        prop, colon, value = declaration.partition(":")
        if colon:
            rules[prop.strip()] = value.replace("!important", "").strip()
    return rules


def _zero(value: str | None) -> bool:
    if not value:
        return False
    match = _NUMBER.match(value)
    return match is not None and float(match.group(1)) <= 0.0


def _clipped(rules: dict[str, str]) -> bool:
    """Zero height or width with overflow hidden: a box that shows none of its content."""
    if rules.get("overflow") != "hidden" and rules.get("overflow-y") != "hidden":
        return False
    return any(_zero(rules.get(p)) for p in ("height", "max-height", "width", "max-width"))


def _offscreen(rules: dict[str, str]) -> bool:
    """Absolutely positioned a screen away (left:-9999px), or indented out of its box."""
    far = -1000.0
    if rules.get("position") in ("absolute", "fixed") and any(
        _length(rules.get(p)) <= far for p in ("left", "top", "right")
    ):
        return True
    return _length(rules.get("text-indent")) <= far


def _length(value: str | None) -> float:
    match = _NUMBER.match(value or "")
    return float(match.group(1)) if match else 0.0


def _font_px(value: str, parent_px: float) -> float:
    if value in _FONT_KEYWORDS:
        return _FONT_KEYWORDS[value]
    if value == "smaller":
        return parent_px / 1.2
    if value == "larger":
        return parent_px * 1.2
    match = _NUMBER.match(value)
    if match is None:
        return parent_px
    number, unit = float(match.group(1)), match.group(2)
    scale = {"px": 1.0, "pt": 4 / 3, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54, "mm": 96 / 25.4, "q": 96 / 101.6}
    if unit in ("em", "ex", "ch"):
        return number * parent_px * (0.5 if unit != "em" else 1.0)
    if unit == "rem":
        return number * DEFAULT_FONT_PX
    if unit == "%":
        return number * parent_px / 100.0
    if unit in scale:
        return number * scale[unit]
    return number if unit == "" and number == 0 else parent_px  # a unitless length is invalid CSS but 0


def _parse_color(value: str, *, legacy: bool = False) -> Color:
    """A CSS colour (hex, rgb()/rgba(), the HTML 4 names, transparent) as RGB; None when not understood.
    `legacy` accepts the HTML attribute form without '#' (`bgcolor="ffffff"`)."""
    value = value.strip().lower()
    if value == _TRANSPARENT:
        return _TRANSPARENT
    if value in _NAMED_COLORS:
        return _NAMED_COLORS[value]
    if value.startswith("#") or legacy:
        match = _HEX.fullmatch(value)
        if match is None:
            return None
        digits = match.group(1)
        if len(digits) in (3, 4):
            digits = "".join(d * 2 for d in digits)
        if len(digits) == 8 and digits[6:] == "00":
            return _TRANSPARENT
        if len(digits) not in (6, 8):
            return None
        return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
    match = _RGB.fullmatch(value)
    if match is None:
        return None
    parts = [p.strip() for p in re.split(r"[,/ ]+", match.group(1).strip()) if p.strip()]
    if len(parts) < 3:
        return None
    try:
        channels = [round(float(p[:-1]) * 2.55) if p.endswith("%") else round(float(p)) for p in parts[:3]]
        alpha = (
            float(parts[3][:-1]) / 100
            if len(parts) > 3 and parts[3].endswith("%")
            else float(parts[3])
            if len(parts) > 3
            else 1.0
        )
    except ValueError:
        return None
    if alpha <= 0.0:
        return _TRANSPARENT
    return tuple(min(255, max(0, c)) for c in channels)  # type: ignore[return-value]


def _background(value: str) -> Color:
    """The colour of a `background` shorthand; an image in it makes the background unknown."""
    if "url(" in value:
        return _UNKNOWN
    for token in re.findall(r"rgba?\([^)]*\)|#[0-9a-f]+|[a-z]+", value):
        color = _parse_color(token)
        if color is not None:
            return color
    return None


def _same_color(state: _State) -> bool:
    """Text drawn in the colour of what is behind it (or in a transparent colour) cannot be read."""
    color, background = state.color, state.background
    if color == _TRANSPARENT:
        return True
    if not isinstance(color, tuple) or not isinstance(background, tuple):
        return False
    return max(abs(a - b) for a, b in zip(color, background, strict=True)) <= COLOR_TOLERANCE
