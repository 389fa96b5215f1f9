"""What the `extract` provider reads out of a page, fed by any HTML parser's tree walk.

`PageReader` takes the events of one walk over the parsed tree (an element starts, text, an
element ends) and builds the readable text as Markdown and the page's links; `lexbor_walk` drives it
over selectolax's Lexbor tree. The parser is chosen by measurement (docs/benchmarks.md, "extract"),
and `bench/extract.py` drives the same reader over lxml, so both parsers are timed on the same work.

No regular expression ever runs over raw HTML: the ones here run over text the parser produced
(emails, phones) or over single links (the user's link patterns).
"""

from __future__ import annotations

import contextlib
import functools
import re
import resource
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from urllib.parse import unquote, urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

# Elements whose content a reader never sees. svg and math carry titles and paths, not prose.
SKIPPED = frozenset(
    {
        "script",
        "style",
        "noscript",
        "template",
        "svg",
        "math",
        "iframe",
        "object",
        "embed",
        "canvas",
        "head",
        "select",
        "textarea",
        "-comment",
    }
)
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
BLOCKS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hgroup",
        "hr",
        "main",
        "nav",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "caption",
        "center",
    }
)
CELLS = frozenset({"td", "th"})
#: the elements whose attributes the reader needs (asking the parser for attributes costs).
WITH_ATTRIBUTES = frozenset({"a", "area", "img"})

#: Markdown indentation stops growing here: 100,000 nested lists must not give lines of 200,000 spaces.
MAX_INDENT = 8
#: longer URLs are not links a user wants, and keep the user's patterns on short input.
MAX_LINK_CHARS = 2048
MAX_LINKS = 10_000
#: the walk looks at the clock once per this many nodes.
CLOCK_EVERY = 2048

_SPACE = re.compile(r"\s+")
_LINK_TEXT_ESCAPE = str.maketrans({"[": r"\[", "]": r"\]"})

SOCIAL_HOSTS: Mapping[str, tuple[str, ...]] = {
    "linkedin": ("linkedin.com",),
    "twitter": ("twitter.com", "x.com"),
    "facebook": ("facebook.com", "fb.com"),
    "youtube": ("youtube.com", "youtu.be"),
    "github": ("github.com",),
    "instagram": ("instagram.com",),
}
_SOCIAL_WORDS = ("linkedin", "twitter", "x.com", "facebook", "fb.com", "youtu", "github", "instagram")
# Share buttons point at the network, not at the company's profile there.
_SHARE_PATHS = ("/intent", "/share", "/sharer", "/sharing", "/sharearticle", "/embed", "/dialog")

# Over text only. Conservative: the local part and each label are bounded, the TLD is letters.
_EMAIL = re.compile(
    r"(?<![\w.%+-])([A-Za-z0-9][A-Za-z0-9._%+-]{0,63})@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}"
    r"[A-Za-z]{2,24})(?![\w-])"
)
_NOT_EMAIL_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "css", "js", "ico"})
# Over text only, and only numbers a reader would take for one: international (+...), a bracketed
# area code, or after a "Tel"/"Phone" label. Dates, versions, order numbers and bare digit runs are not.
# Candidates start at a digit, "+" or "(" (rare in prose, so the scan is quick); the label is looked
# for just before a candidate.
_PHONE = re.compile(r"(?<![\w+(])[+(]?\d[\d ().-]{6,22}\d(?![\w-])")
_AREA_CODE = re.compile(r"\(\d{2,5}\)")
_PHONE_LABEL = re.compile(r"(?i:\b(?:tel|phone|telephone|call|mobile|fax)\b\.?:?[ \t]*)$")


class Overtime(Exception):
    """The walk passed its deadline (`extract`'s timeout)."""


@dataclass
class _Link:
    href: str | None
    label: str
    parts: list[str] = field(default_factory=list)


class PageReader:
    """Markdown, links and visible text from one walk over a parsed page.

    The walker calls `start(tag, attributes)`, `text(value)` and `end(tag)` in document order,
    never entering the elements of `SKIPPED`.
    """

    def __init__(self, base_url: str, *, max_text_chars: int) -> None:
        self.base_url = base_url
        self.max_text_chars = max_text_chars
        self._resolved: dict[str, str | None] = {}
        base = urlsplit(base_url)
        self._origin = f"{base.scheme}://{base.netloc.lower()}" if base.scheme in ("http", "https") else ""
        #: (is a list item, line): list items are joined by one newline, other blocks by a blank line.
        self.lines: list[tuple[bool, str]] = []
        #: the visible text of each block, without link targets: what emails and phones are read from.
        self.plain: list[str] = []
        self.links: dict[str, None] = {}
        self.mailto: list[str] = []
        self.tel: list[str] = []
        self.text_chars = 0
        self.text_truncated = False
        self.links_truncated = False
        self._inline: list[str] = []
        self._plain: list[str] = []
        self._prefix = ""
        self._item = False
        self._lists: list[list[int]] = []  # [ordered, next number] per open list
        self._quotes = 0
        self._pre = 0
        self._link: _Link | None = None
        self._after_link = False

    # --- events -----------------------------------------------------------------------------------

    def start(self, tag: str, attributes: Mapping[str, str | None]) -> None:
        """An element opens."""
        if self._link is not None and tag not in WITH_ATTRIBUTES:
            # Blocks inside a link (a card): its words stay together, one space where a block was.
            self._link.parts.append(" ")
        elif tag in HEADINGS:
            self._flush()
            self._prefix = "#" * HEADINGS[tag] + " "
        elif tag == "li":
            self._start_item()
        elif tag in ("ul", "ol", "menu"):
            self._flush()
            self._lists.append([tag == "ol", 1])
        elif tag == "a" or tag == "area":
            self._start_link(attributes)
        elif tag == "img":
            self._image(attributes)
        elif tag == "br":
            self._flush(keep_prefix=True)
        elif tag in CELLS:
            self._add(" | " if self._inline else "")
        elif tag in BLOCKS:
            self._flush()
            self._quotes += tag == "blockquote"
            self._pre += tag == "pre"

    def text(self, value: str) -> None:
        """Text inside the element last opened."""
        if not self._inline and self._link is None and not self._pre and value.isspace():
            return  # the indentation between blocks: most text nodes of a page
        self._add(value)

    def end(self, tag: str) -> None:
        """An element closes."""
        if tag == "a" or tag == "area":
            self._end_link()
        elif self._link is not None:
            self._link.parts.append(" ")
        elif tag in ("ul", "ol", "menu"):
            self._flush()
            if self._lists:
                self._lists.pop()
        elif tag in BLOCKS or tag in HEADINGS or tag == "li":
            self._flush()
            self._quotes -= tag == "blockquote" and self._quotes > 0
            self._pre -= tag == "pre" and self._pre > 0

    # --- results ----------------------------------------------------------------------------------

    def markdown(self) -> str:
        """The readable text, cut at max_text_chars."""
        self._flush()
        pieces: list[str] = []
        previous_item = False
        for item, line in self.lines:
            if pieces:
                pieces.append("\n" if item and previous_item else "\n\n")
            pieces.append(line)
            previous_item = item
        text = "".join(pieces)
        if len(text) > self.max_text_chars:
            self.text_truncated = True
            text = text[: self.max_text_chars]
        return text

    def resolve(self, href: str | None) -> str | None:
        """An absolute http(s) URL without fragment, or None for anything else (mailto, javascript...)."""
        if href is None:
            return None
        if href not in self._resolved:  # a page links to the same places many times
            self._resolved[href] = self._absolute(href)
        return self._resolved[href]

    def _absolute(self, href: str) -> str | None:
        # Browsers drop surrounding whitespace and control characters, and tabs and newlines within.
        href = href.strip("\x00\t\n\f\r ").replace("\t", "").replace("\n", "").replace("\r", "")
        if not href or href.startswith("#") or len(href) > MAX_LINK_CHARS:
            return None
        href = href.partition("#")[0]
        if href.startswith("/") and not href.startswith("//") and "/." not in href:
            # The common case, a path on the page's own site, without urljoin's cost.
            return self._origin + href if self._origin else None
        try:
            absolute = (
                href if href[:8].lower().startswith(("https://", "http://")) else urljoin(self.base_url, href)
            )
            parts = urlsplit(absolute)
        except ValueError:  # e.g. a broken IPv6 host
            return None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        if "@" in parts.netloc:  # user:password@host: not a link to publish
            return None
        return parts._replace(netloc=parts.netloc.lower()).geturl()

    # --- inside -----------------------------------------------------------------------------------

    def _add(self, value: str) -> None:
        if not value:
            return
        if self._link is not None:
            self._link.parts.append(value)
            return
        self._after_link = value.isspace() and self._after_link
        self._inline.append(value)
        self._plain.append(value)

    def _start_item(self) -> None:
        self._flush()
        depth = min(max(len(self._lists) - 1, 0), MAX_INDENT)
        marker = "-"
        if self._lists and self._lists[-1][0]:
            marker = f"{self._lists[-1][1]}."
            self._lists[-1][1] += 1
        self._prefix = "  " * depth + marker + " "
        self._item = True

    def _start_link(self, attributes: Mapping[str, str | None]) -> None:
        if self._link is not None:  # nested links do not survive parsing, but an <area> inside <a> may
            self._end_link()
        href = attributes.get("href")
        url = self.resolve(href)
        if url is not None:
            self._note_link(url)
        elif href:
            self._note_other(href.strip())
        label = attributes.get("aria-label") or attributes.get("title") or ""
        target = url or (
            href.strip() if href and href.strip().lower().startswith(("mailto:", "tel:")) else None
        )
        self._link = _Link(target, label)

    def _end_link(self) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        words = _SPACE.sub(" ", "".join(link.parts)).strip() or _SPACE.sub(" ", link.label).strip()
        if not words:
            return
        self._plain.append(f" {words} ")
        if self._after_link:
            self._inline.append(" ")  # links side by side (a menu) are laid apart by CSS, not by text
        if link.href is None:
            self._inline.append(words)
        else:
            target = link.href.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
            self._inline.append(f"[{words.translate(_LINK_TEXT_ESCAPE)}]({target})")
        self._after_link = True

    def _image(self, attributes: Mapping[str, str | None]) -> None:
        # An image's alt text names a link without words (a logo, a social icon); elsewhere it decorates.
        alt = attributes.get("alt")
        if alt and self._link is not None:
            self._link.parts.append(alt)

    def _note_link(self, url: str) -> None:
        if url in self.links:
            return
        if len(self.links) >= MAX_LINKS:
            self.links_truncated = True
            return
        self.links[url] = None

    def _note_other(self, href: str) -> None:
        lowered = href[:7].lower()
        if lowered.startswith("mailto:"):
            self.mailto.append(href[7:])
        elif lowered.startswith("tel:"):
            self.tel.append(href[4:])

    def _flush(self, *, keep_prefix: bool = False) -> None:
        if self._link is not None:
            return  # a block inside a link (a card): the link's words stay together
        if not self._inline and not self._plain:
            if not keep_prefix:
                self._prefix = ""
                self._item = False
            return
        line = " ".join("".join(self._inline).split()) if not self._pre else "".join(self._inline)
        plain = " ".join("".join(self._plain).split())
        self._inline.clear()
        self._plain.clear()
        self._after_link = False
        if plain:
            self.plain.append(plain)
        if line and not self.text_truncated:
            quote = "> " * min(self._quotes, MAX_INDENT)
            self.lines.append((self._item, quote + self._prefix + line))
            self.text_chars += len(line) + 2
            # Past the limit the walk goes on for links and contacts, but text is no longer kept.
            self.text_truncated = self.text_chars > self.max_text_chars
        if not keep_prefix:
            self._prefix = ""
            self._item = False


def lexbor_walk(root: LexborNode, reader: PageReader, deadline: float) -> None:
    """Feed `reader` the events of a depth-first walk under `root`, without recursion.

    Each element's end comes once all its children were seen; the elements of SKIPPED are not
    entered. Raises Overtime once the clock passes `deadline`.
    """
    node: LexborNode | None = root.child
    seen = 0
    while node is not None:
        seen += 1
        if seen % CLOCK_EVERY == 0 and time.monotonic() > deadline:
            raise Overtime
        tag = node.tag
        if tag == "-text":
            reader.text(node.text_content or "")
        elif tag not in SKIPPED and tag is not None:
            reader.start(tag, node.attributes if tag in WITH_ATTRIBUTES else {})
            child = node.child
            if child is not None:
                node = child
                continue
            reader.end(tag)
        node = _next_up(node, root, reader)


def _next_up(node: LexborNode, root: LexborNode, reader: PageReader) -> LexborNode | None:
    """The next node in document order after `node`'s subtree, closing the elements left on the way."""
    while True:
        following = node.next
        if following is not None:
            return following
        parent = node.parent
        if parent is None or parent.mem_id == root.mem_id:
            return None
        reader.end(parent.tag or "")
        node = parent


# --- the page as a whole ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """What the page's head says about it."""

    title: str | None
    meta_description: str | None
    base_href: str | None


def lexbor_head(parser: LexborHTMLParser) -> Head:
    """Title, meta description and <base href>, read with the parser's own selectors."""
    title_node = parser.css_first("head > title") or parser.css_first("title:not(svg title)")
    title = _clean(title_node.text(deep=True)) if title_node is not None else None
    description = None
    for meta in parser.css("meta[name]"):
        name = (meta.attributes.get("name") or "").strip().lower()
        if name == "description":
            description = _clean(meta.attributes.get("content") or "")
            break
    base = parser.css_first("base[href]")
    return Head(title or None, description or None, base.attributes.get("href") if base else None)


def _clean(value: str) -> str:
    return _SPACE.sub(" ", value).strip()


def emails(mailto: Iterable[str], texts: Iterable[str]) -> list[str]:
    """Addresses from mailto: links, then from visible text; de-duplicated, domains lower-cased."""
    found: dict[str, None] = {}
    for target in mailto:
        for candidate in unquote(target.split("?", 1)[0]).split(","):
            match = _EMAIL.fullmatch(candidate.strip())
            if match:
                found.setdefault(_email(match), None)
    for text in texts:
        if "@" not in text:
            continue
        for match in _EMAIL.finditer(text):
            if match.group(2).rsplit(".", 1)[-1].lower() not in _NOT_EMAIL_TLDS:
                found.setdefault(_email(match), None)
    return list(found)


def _email(match: re.Match[str]) -> str:
    return f"{match.group(1)}@{match.group(2).lower()}"


def phones(tel: Iterable[str], texts: Iterable[str]) -> list[str]:
    """Numbers from tel: links, then from visible text, as "+" and digits (or digits alone)."""
    found: dict[str, None] = {}
    for target in tel:
        number = _number(unquote(target.split("?", 1)[0].split(";", 1)[0]))
        if number:
            found.setdefault(number, None)
    text = "\n".join(texts)
    for match in _PHONE.finditer(text):
        written = match.group()
        if not (
            written[0] == "+"
            or _AREA_CODE.match(written)
            or _PHONE_LABEL.search(text, max(0, match.start() - 16), match.start())
        ):
            continue
        number = _number(written)
        if number:
            found.setdefault(number, None)
    return list(found)


def _number(written: str) -> str | None:
    digits = "".join(c for c in written if c.isdigit() and c.isascii())
    if not 7 <= len(digits) <= 15:
        return None
    return ("+" if written.strip().startswith("+") else "") + digits


def social(links: Iterable[str]) -> dict[str, str | None]:
    """The first profile link of each network (share buttons and bare domains are not profiles)."""
    found: dict[str, str | None] = dict.fromkeys(SOCIAL_HOSTS)
    for link in links:
        if not any(word in link for word in _SOCIAL_WORDS):
            continue  # most links; spares urlsplit
        parts = urlsplit(link)
        host = (parts.hostname or "").lower()
        path = parts.path.rstrip("/").lower()
        if not path or path.startswith(_SHARE_PATHS):
            continue
        for network, domains in SOCIAL_HOSTS.items():
            if found[network] is None and any(host == d or host.endswith("." + d) for d in domains):
                found[network] = link
    return found


def matching(links: Iterable[str], patterns: Iterable[re.Pattern[str]]) -> list[str]:
    """The links that any of the patterns finds a match in."""
    compiled = list(patterns)
    return [link for link in links if any(p.search(link) for p in compiled)] if compiled else []


# --- one page, start to end ------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A page's HTML made safe to parse: at most max_html_bytes of UTF-8 (or of declared bytes), no NUL."""

    data: bytes
    #: whether `data` is still in the page's own encoding (bytes in), to be detected from its <meta charset>.
    detect_encoding: bool
    notes: tuple[str, ...] = ()
    #: whether the page was longer than max_html_bytes.
    cut: bool = False


def prepare(html: str | bytes, max_html_bytes: int) -> Prepared:
    """Cut, encode and clean a page before it goes to the parser (cheap: no parsing here)."""
    notes: list[str] = []
    if isinstance(html, str):
        size = f"{len(html):,} characters"
        # Each character is at least one byte: the first max_html_bytes characters hold the cut.
        head = html[:max_html_bytes]
        try:
            data = head.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates become bytes no UTF-8 decoder accepts: the parser turns them into U+FFFD.
            data = head.encode("utf-8", "surrogatepass")
        detect = False
    else:
        size = f"{len(html):,} bytes"
        data = bytes(html[: max_html_bytes + 1])
        detect = True
    cut = len(data) > max_html_bytes or len(html) > max_html_bytes
    if cut:
        data = data[:max_html_bytes]
        notes.append(f"html cut to its first {max_html_bytes:,} bytes (max_html_bytes) of {size}")
    if b"\x00" in data:
        # NUL reaches no database (PostgreSQL refuses it in text); browsers ignore it too.
        data = data.replace(b"\x00", b"")
        notes.append("NUL characters removed")
    return Prepared(data, detect, tuple(notes), cut)


def read_page(
    prepared: Prepared,
    base_url: str,
    *,
    max_text_chars: int,
    link_patterns: tuple[str, ...] = (),
    timeout_s: float = 30.0,
) -> dict[str, object]:
    """Everything `extract` outputs but `extracted_at`, from a prepared page."""
    deadline = time.monotonic() + timeout_s
    parser = LexborHTMLParser(prepared.data, encoding=prepared.detect_encoding)
    head = lexbor_head(parser)
    if head.base_href:
        base_url = PageReader(base_url, max_text_chars=0).resolve(head.base_href) or base_url
    reader = PageReader(base_url, max_text_chars=max_text_chars)
    root = parser.body
    if root is not None:
        lexbor_walk(root, reader, deadline)
    return page_data(reader, head, prepared, link_patterns)


def page_data(
    reader: PageReader, head: Head, prepared: Prepared, link_patterns: tuple[str, ...]
) -> dict[str, object]:
    """The outputs, once the walk is done (the same for every parser)."""
    text = reader.markdown()
    links = list(reader.links)
    found_notes = list(prepared.notes)
    if reader.text_truncated:
        found_notes.append(f"text cut at {reader.max_text_chars:,} characters (max_text_chars)")
    if reader.links_truncated:
        found_notes.append(f"links cut at {MAX_LINKS:,}")
    return {
        "title": head.title,
        "meta_description": head.meta_description,
        "text": text,
        "links": links,
        "matching_links": matching(links, compiled(link_patterns)),
        "emails": emails(reader.mailto, reader.plain),
        "phones": phones(reader.tel, reader.plain),
        "social": social(links),
        "truncated": prepared.cut or reader.text_truncated or reader.links_truncated,
        "notes": found_notes,
    }


@functools.lru_cache(maxsize=256)
def compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    """The link patterns, compiled once per process."""
    return tuple(re.compile(p) for p in patterns)


# --- the worker process -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One page for a worker process to read."""

    prepared: Prepared
    base_url: str
    max_text_chars: int
    link_patterns: tuple[str, ...]
    timeout_s: float


def serve(conn: Connection, memory_limit: int) -> None:
    """A worker process: read each Job sent, answer ("ok", data) or ("error", reason); None ends it."""
    # Ctrl-C in a terminal reaches the whole process group: the parent decides, and closing its end
    # of the socket (or dying) ends this loop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ValueError, OSError):  # a limit above the hard one, or no such limit
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if job is None:
            return
        conn.send(answer(job, memory_limit))


def answer(job: Job, memory_limit: int = 0) -> tuple[str, object]:
    """What a worker sends back for one job."""
    try:
        data = read_page(
            job.prepared,
            job.base_url,
            max_text_chars=job.max_text_chars,
            link_patterns=job.link_patterns,
            timeout_s=job.timeout_s,
        )
    except Overtime:
        return "error", f"the page was not read within {job.timeout_s:g}s (timeout_s)"
    except (MemoryError, SelectolaxError):
        # Lexbor reports a failed allocation as a failed parse; it fails no other way on any input.
        return "error", f"the page needs more than the {memory_limit // 2**20:,} MiB a worker may use"
    except Exception as exc:  # noqa: BLE001 - a parser bug fails this page, not the worker
        return "error", f"the page could not be read: {type(exc).__name__}: {exc}"
    return "ok", data
