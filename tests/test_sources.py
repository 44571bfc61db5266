"""Library source digests: what makes Snakemake rerun a rule when the library changes."""

from pathlib import Path

from esol.sources import library_sources, source_digest

REPO = Path(__file__).resolve().parents[1]


def _pkg(root: Path) -> Path:
    for rel, text in {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.sub import b\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "from . import c\nimport os\n",
        "pkg/sub/c.py": "x = 1\n",
        "pkg/unused.py": "y = 2\n",
        "entry.py": "from pkg.a import thing\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "entry.py"


def test_sources_are_the_transitive_imports_with_their_packages(tmp_path):
    entry = _pkg(tmp_path)
    got = [p.relative_to(tmp_path).as_posix() for p in library_sources(entry, tmp_path, "pkg")]
    assert got == ["pkg/__init__.py", "pkg/a.py", "pkg/sub/__init__.py", "pkg/sub/b.py",
                   "pkg/sub/c.py"]


def test_digest_changes_with_an_imported_file_only(tmp_path):
    entry = _pkg(tmp_path)
    before = source_digest(entry, tmp_path, "pkg")
    (tmp_path / "pkg/unused.py").write_text("y = 3\n")
    from esol import sources
    sources._digest.cache_clear()
    assert source_digest(entry, tmp_path, "pkg") == before
    (tmp_path / "pkg/sub/c.py").write_text("x = 2\n")
    sources._digest.cache_clear()
    assert source_digest(entry, tmp_path, "pkg") != before


def test_every_entry_script_reaches_the_module_it_calls():
    cam = library_sources(REPO / "workflow/scripts/make_cam.py", REPO)
    assert REPO / "esol/cam.py" in cam and REPO / "esol/stages.py" in cam


def test_every_script_rule_carries_the_digest_of_its_library_code():
    import re

    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"\n(?=\s*rule \w+:)", text):
            m = re.search(r'script:\n\s+"\.\./scripts/(\w+\.py)"', block)
            if m:
                assert f'code=code_digest("{m.group(1)}")' in block, f"{smk.name}: {block.split(':')[0]}"


def test_every_rule_resource_grows_per_attempt():
    import re

    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for line in smk.read_text().splitlines():
            if re.match(r"\s+(mem_mb|runtime)=", line):
                assert "attempt_scaled(" in line, f"{smk.name}: {line.strip()}"
