"""The report's markdown tables as small self-contained HTML pages.

Snakemake's HTML report (``snakemake --report``) shows a registered ``.html`` file in the
page, but offers a ``.csv`` or ``.md`` file only as a download. The report rule therefore
also writes each table section as HTML. Only the markdown the report itself writes is
understood (headings, paragraphs, pipe tables, images, links, inline code and bold);
images are embedded as data URIs so a page needs no other file.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
import re
from pathlib import Path

from esol.utils import atomic_path

STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
th { background: #eee; }
td:first-child, th:first-child { text-align: left; }
code { background: #f3f3f3; padding: 0 2px; }
figure { margin: 0.6em 0; } figcaption { font-size: 12px; color: #555; }
img { max-width: 100%; }
"""

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)]+)\)")


def _inline(text: str) -> str:
    """Escape, then inline code, bold and links (images are handled per line)."""
    out, parts = [], re.split(r"(`[^`]*`)", text)
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(part, quote=False)
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        part = _LINK.sub(lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', part)
        out.append(part)
    return "".join(out)


def _image(alt: str, src: str, base: Path, embed: bool) -> str:
    path = base / src
    if embed and path.is_file():
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        src = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(md: str, base: str | os.PathLike = ".", images: bool = True) -> str:
    """The body HTML of the report's markdown ``md``.

    Image paths are relative to ``base`` and embedded; ``images=False`` leaves image lines
    out (for a table page whose figure is registered in the report on its own).
    """
    base = Path(base)
    lines, out, para = md.splitlines(), [], []

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            flush()
        elif line.startswith("#"):
            flush()
            level = min(6, len(line) - len(line.lstrip("#")))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i].strip())
                i += 1
            i -= 1
            rows = [r for r in block if not re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*", r)]
            head, body = rows[0], rows[1:]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in _cells(head))
                       + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(r)) + "</tr>"
                                 for r in body) + "</tbody></table>")
        elif _IMAGE.fullmatch(line):
            flush()
            if images:
                m = _IMAGE.fullmatch(line)
                out.append(_image(m.group(1), m.group(2), base, embed=True))
        else:
            para.append(line)
        i += 1
    flush()
    return "\n".join(out)


def html_page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def write_html(path: str | os.PathLike, md: str, base: str | os.PathLike = ".",
               images: bool = True) -> None:
    """``md`` as a self-contained HTML page at ``path`` (title: its first heading)."""
    title = next((ln.lstrip("#").strip() for ln in md.splitlines() if ln.startswith("#")), "report")
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text(html_page(title, markdown_to_html(md, base, images)), encoding="utf-8")


def section(md: str, heading: str) -> str:
    """The part of ``md`` from the line starting with ``heading`` (e.g. ``"## Table 3"``)
    to the next heading of the same level; a clear error if there is none."""
    level = heading.split(" ")[0]
    lines = md.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith(heading)), None)
    if start is None:
        raise ValueError(f"report has no section starting with {heading!r}")
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith(level + " ")), len(lines))
    return "\n".join(lines[start:end]) + "\n"
