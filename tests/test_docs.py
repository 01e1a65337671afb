"""The README and docs/: every relative link resolves (anchors included), the README stays short, links every
docs page and shows a library snippet that imports. Fast, no network."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_WORDS = 1500

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title"), images too
BARE_DOC = re.compile(r"`(docs/[^`\s]+?\.md(?:#[^`\s]*)?)`")  # `docs/x.md` or `docs/x.md#anchor` in backticks
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
EXTERNAL = ("http://", "https://", "mailto:")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def without_fences(text: str) -> str:
    """The text with every fenced code block blanked (its lines kept, empty), so that `# comments` in shell
    blocks are no headings and code is no link."""
    lines, fence = [], None
    for line in text.split("\n"):
        marker = re.match(r"\s{0,3}(`{3,}|~{3,})", line)
        if fence is None and marker:
            fence = marker.group(1)[0] * len(marker.group(1))
            lines.append("")
        elif fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            lines.append("")
        else:
            lines.append(line)
    return "\n".join(lines)


def github_slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped (hyphens, spaces and underscores kept),
    each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    result = set()
    for line in without_fences(path.read_text(encoding="utf-8")).split("\n"):
        match = re.match(r"\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(path: Path) -> list[tuple[str, Path]]:
    """(target as written, the folder it is relative to) of every markdown link and every `docs/...md` mention
    in backticks, outside code blocks; external links left out."""
    text = without_fences(path.read_text(encoding="utf-8"))
    found = [(m.group(1), ROOT) for m in BARE_DOC.finditer(text)]  # written from the repository root
    prose = INLINE_CODE.sub(lambda m: "code", text)  # code spans are no links (their text may sit inside [...])
    found += [(m.group(1), path.parent) for m in LINK.finditer(prose)]
    return [(target, base) for target, base in found if not target.lower().startswith(EXTERNAL)]


def resolve(path: Path, target: str, base: Path) -> tuple[Path, str]:
    file_part, _, anchor = target.partition("#")
    return ((base / file_part).resolve() if file_part else path.resolve()), anchor


def test_slugs_follow_github():
    assert github_slug("Is alpha = 0.5 best?") == "is-alpha--05-best"
    assert github_slug("Paper scale: mMARCO, three encoders, seeds") == "paper-scale-mmarco-three-encoders-seeds"
    assert github_slug("Several GPUs (torchrun)") == "several-gpus-torchrun"
    assert github_slug("The `metrics.json` file") == "the-metricsjson-file"


def test_the_link_finder_sees_links_mentions_and_anchors_but_not_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n\nSee [b](b.md#x), ![img](fig.png), `docs/c.md` and [self](#a-title).\n"
                    "[`code` text](d.md) and `[not](a-link.md)`, [web](https://example.org)\n"
                    "```bash\n# not a heading\nsee [e](e.md)\n```\n")
    assert sorted(t for t, _ in links(page)) == ["#a-title", "b.md#x", "d.md", "docs/c.md", "fig.png"]
    assert anchors(page) == {"a-title"}


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    broken = []
    for target, base in links(path):
        file, anchor = resolve(path, target, base)
        if not file.exists():
            broken.append(f"{target}: no such file ({file})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading of {file.name} has the anchor #{anchor}")
    assert not broken, f"{path.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_readme_is_at_most_1500_words():
    words = len(README.read_text(encoding="utf-8").split())
    assert words <= MAX_README_WORDS, f"README.md has {words} words; move detail into docs/ ({MAX_README_WORDS} at most)"


def test_readme_links_every_docs_page():
    assert doc_pages(), "docs/ holds no page"
    linked = {resolve(README, target, base)[0] for target, base in links(README)}
    missing = [str(page.relative_to(ROOT)) for page in doc_pages() if page.resolve() not in linked]
    assert not missing, f"README.md does not link {missing} (add them to 'Where next')"


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.name)
def test_each_docs_page_has_a_title_and_links_back_to_the_readme(page):
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# "), f"{page.name} does not start with a '# Title'"
    assert any(resolve(page, target, base)[0] == README.resolve() for target, base in links(page)), \
        f"{page.name} does not link back to ../README.md"


def test_readme_library_snippet_imports():
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
    snippets = [block for block in blocks if "from hybridlib" in block]
    assert snippets, "README.md has no python block importing hybridlib"
    for block in snippets:
        imports = [node for node in ast.parse(block).body if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert imports
        exec(compile(ast.Module(body=imports, type_ignores=[]), "README.md", "exec"), {})
