"""Repository context for a code task: the files named, plus a bounded set of related files.

Related files are found by the import graph (modules the current file imports, files that import it; Python
and relative JS/TS imports) and by symbol match (files defining names the task mentions), ranked in that order
and added whole while they fit a token budget. ``.gitignore`` files keep files out of the related set;
``.aiexclude`` files (same syntax) keep files out of every prompt, named ones included.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidRequestError

__all__ = ["ContextFile", "CodeContext", "RepoFilter", "find_root", "gather_context", "read_source"]

_MAX_FILES = 3000
_MAX_DIRS = 3000  # a root that is a home directory must not turn one completion into a walk of the disk
_MAX_FILE_BYTES = 200_000
_SOURCE_SUFFIXES = {
    ".py",
    ".pyi",
    ".js",
    ".jsx",
    ".ts",
    ".tsx",
    ".go",
    ".rs",
    ".java",
    ".rb",
    ".c",
    ".h",
    ".cpp",
}
_ALWAYS_SKIP = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".mypy_cache"}


def estimate(text: str) -> int:
    return len(text) // 4 + 1


def read_source(path: Path) -> str:
    """A text file's content, or one clear user error (missing, a directory, binary, not UTF-8)."""
    if not path.exists():
        raise InvalidRequestError(f"file {path} does not exist")
    if not path.is_file():
        raise InvalidRequestError(f"{path} is not a file")
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        raise InvalidRequestError(f"{path} is a binary file; give a text source file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError(f"{path} is not UTF-8 text; give a text source file") from None


def find_root(start: Path) -> Path:
    """The enclosing git work tree, else the directory itself (or the file's directory)."""
    start = start.resolve()
    here = start if start.is_dir() else start.parent
    for d in (here, *here.parents):
        if (d / ".git").exists():
            return d
    return here


class RepoFilter:
    """.gitignore and .aiexclude rules of a tree (nested files apply below their own directory)."""

    def __init__(self, root: Path) -> None:
        try:
            import pathspec
        except ImportError:
            raise InvalidRequestError(
                "the code assistant needs the 'code' extra: pip install 'polyfuse[code]'"
            ) from None
        self._pathspec = pathspec
        self.root = root.resolve()
        self._specs: dict[tuple[Path, str], object] = {}

    def _spec(self, directory: Path, name: str) -> object | None:
        key = (directory, name)
        if key not in self._specs:
            f = directory / name
            lines = f.read_text(encoding="utf-8", errors="replace").splitlines() if f.is_file() else []
            if name == ".gitignore" and directory == self.root:
                info = self.root / ".git" / "info" / "exclude"
                if info.is_file():
                    lines += info.read_text(encoding="utf-8", errors="replace").splitlines()
            self._specs[key] = self._pathspec.GitIgnoreSpec.from_lines(lines) if lines else None
        return self._specs[key]

    def _matches(self, path: Path, name: str) -> bool:
        path = path.resolve()
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return False
        directory = self.root
        for i in range(len(rel.parts)):
            spec = self._spec(directory, name)
            sub = "/".join(rel.parts[i:]) + ("/" if path.is_dir() else "")
            if spec is not None and spec.match_file(sub):  # type: ignore[attr-defined]
                return True
            directory = directory / rel.parts[i]
        return False

    def ai_excluded(self, path: Path) -> bool:
        return self._matches(path, ".aiexclude")

    def ignored(self, path: Path) -> bool:
        return self._matches(path, ".gitignore") or self.ai_excluded(path)

    def walk(self) -> Iterator[Path]:
        """Source files of the tree that neither .gitignore nor .aiexclude rules out."""
        count = dirs = 0
        stack = [self.root]
        while stack and dirs < _MAX_DIRS:
            d = stack.pop()
            dirs += 1
            try:
                entries = sorted(d.iterdir())
            except OSError:
                continue
            for p in entries:
                if p.name in _ALWAYS_SKIP or p.is_symlink() or self.ignored(p):
                    continue
                if p.is_dir():
                    stack.append(p)
                # is_file: reading a FIFO named x.py would block forever
                elif p.suffix in _SOURCE_SUFFIXES and p.is_file() and p.stat().st_size <= _MAX_FILE_BYTES:
                    count += 1
                    if count > _MAX_FILES:
                        return
                    yield p


@dataclass
class ContextFile:
    path: str  # relative to the root
    text: str
    reason: str  # "named", "imported", "imports this file", "defines foo", ...
    truncated: bool = False


@dataclass
class CodeContext:
    root: Path
    files: list[ContextFile] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)  # named files left out by .aiexclude
    budget: int = 0

    @property
    def tokens(self) -> int:
        return sum(estimate(f.text) for f in self.files)

    def render(self) -> str:
        parts = [
            f"--- {f.path} ({f.reason}{', truncated' if f.truncated else ''}) ---\n{f.text}"
            for f in self.files
        ]
        return "\n\n".join(parts)


_JS_IMPORT = re.compile(r"""(?:from\s+|require\(\s*|import\s+)['"](\.{1,2}/[^'"]+)['"]""")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_KEYWORDS = {
    "def",
    "class",
    "return",
    "import",
    "from",
    "self",
    "None",
    "True",
    "False",
    "for",
    "while",
    "with",
}


def _module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    if parts and parts[0] == "src":
        parts.pop(0)
    return ".".join(parts)


def _python_imports(path: Path, text: str, root: Path) -> set[str]:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return set()
    own = _module_name(root, path).split(".")
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = (
                    own[: len(own) - node.level]
                    if path.name != "__init__.py"
                    else own[: len(own) - node.level + 1]
                )
                base = ".".join([*pkg, base] if base else pkg)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _imports(path: Path, text: str, root: Path, modules: dict[str, Path]) -> set[Path]:
    if path.suffix in (".py", ".pyi"):
        return {modules[n] for n in _python_imports(path, text, root) if n in modules} - {path}
    found = set()
    for spec in _JS_IMPORT.findall(text):
        base = (path.parent / spec).resolve()
        for cand in (base, *(base.with_suffix(s) for s in (".js", ".ts", ".tsx", ".jsx")), base / "index.js"):
            if cand.is_file():
                found.add(cand)
                break
    return found


def _definitions(text: str) -> set[str]:
    return set(
        re.findall(
            r"^\s*(?:async\s+)?(?:def|class|function|func|fn|const|let|var)\s+([A-Za-z_]\w*)", text, re.M
        )
    ) | set(re.findall(r"^([A-Za-z_]\w*)\s*=", text, re.M))


def gather_context(
    root: Path,
    *,
    current: Path | None = None,
    named: list[Path] | None = None,
    query: str = "",
    budget_tokens: int = 2000,
    repo_filter: RepoFilter | None = None,
) -> CodeContext:
    """Named files (always, unless .aiexclude rules them out), then related files ranked by import graph and
    symbol match, within ``budget_tokens``. ``current`` itself is not included (the task shows it already)."""
    root = root.resolve()
    rf = repo_filter or RepoFilter(root)
    ctx = CodeContext(root=root, budget=budget_tokens)
    seen: set[Path] = {current.resolve()} if current else set()
    for p in named or []:
        p = p.resolve()
        if p in seen:
            continue
        seen.add(p)
        if rf.ai_excluded(p):
            ctx.excluded.append(_rel(root, p))
            continue
        _add(ctx, p, read_source(p), "named")
    for p, reason in _related(root, rf, current, query):
        if p in seen:
            continue
        seen.add(p)
        if ctx.tokens >= budget_tokens:
            break
        _add(ctx, p, p.read_text(encoding="utf-8", errors="replace"), reason)
    return ctx


def _rel(root: Path, p: Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


def _add(ctx: CodeContext, path: Path, text: str, reason: str) -> None:
    room = ctx.budget - ctx.tokens
    if room <= 50:
        return
    truncated = estimate(text) > room
    if truncated:
        text = text[: room * 4].rsplit("\n", 1)[0]
    ctx.files.append(ContextFile(_rel(ctx.root, path), text, reason, truncated))


def _related(root: Path, rf: RepoFilter, current: Path | None, query: str) -> list[tuple[Path, str]]:
    files = list(rf.walk())
    texts = {p: p.read_text(encoding="utf-8", errors="replace") for p in files}
    modules = {_module_name(root, p): p for p in files if p.suffix == ".py"}
    ranked: list[tuple[Path, str]] = []
    cur = current.resolve() if current else None
    if cur is not None and cur.is_file():
        cur_text = cur.read_text(encoding="utf-8", errors="replace")
        if cur.is_relative_to(root):  # a file outside the root has no module name there: symbols only
            ranked += [(p, "imported by this file") for p in sorted(_imports(cur, cur_text, root, modules))]
            ranked += [
                (p, "imports this file")
                for p in files
                if p != cur and cur in _imports(p, texts[p], root, modules)
            ]
        query = query + "\n" + cur_text
    wanted = {w for w in _IDENT.findall(query) if w not in _KEYWORDS}
    scored = []
    for p in files:
        if p == cur:
            continue
        hits = sorted(_definitions(texts[p]) & wanted)
        if hits:
            scored.append((len(hits), p, "defines " + ", ".join(hits[:5])))
    ranked += [(p, why) for _, p, why in sorted(scored, key=lambda t: (-t[0], str(t[1])))]
    return ranked
