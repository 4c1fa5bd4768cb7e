"""A real editor: Debian's neovim, headless, with its built-in LSP client (tests/nvim_lsp.lua) against
``polyfuse lsp`` on the two bundled models. It opens a file, asks for an inline completion and puts it in the
buffer (running the item's accepted command), then applies a code action's edit; the buffer is checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lsphelp import SOURCE

pytestmark = [pytest.mark.local, pytest.mark.editor]

NVIM = shutil.which("nvim")


@pytest.mark.skipif(NVIM is None, reason="neovim is not installed (scripts/test installs it)")
def test_neovim_completes_and_applies_a_code_action(tmp_path):
    (tmp_path / ".git").mkdir()
    file = tmp_path / "mathx.py"
    file.write_text(SOURCE)
    (tmp_path / "polyfuse.toml").write_text(f'[log]\npath = "{tmp_path / "runs.db"}"\n')
    out = tmp_path / "report.json"
    spec = {
        "cmd": [sys.executable, "-m", "polyfuse.cli.main", "lsp"],
        "root": str(tmp_path),
        "options": {"preset": "local", "complete_max_tokens": 24, "max_tokens": 48, "latency_budget": 120},
        "file": str(file),
        "position": {"line": 9, "character": 4},
        "range": {"start": {"line": 3, "character": 0}, "end": {"line": 9, "character": 0}},
        "out": str(out),
    }
    script = Path(__file__).with_name("nvim_lsp.lua")
    env = {**os.environ, "POLYFUSE_NVIM": json.dumps(spec)}
    cmd = [NVIM, "--headless", "-n", "-i", "NONE", "-u", "NONE", "-c", f"luafile {script}"]
    subprocess.run(cmd, cwd=tmp_path, env=env, timeout=900, check=False, capture_output=True)
    report = json.loads(out.read_text())
    assert "error" not in report, report.get("error")
    assert report["inline_provider"] is True
    lines = SOURCE.split("\n")
    if report["items"]:  # the suggestion is in the buffer, at the cursor, and its acceptance was recorded
        inserted = lines[:9] + [lines[9][:4] + report["insert_text"] + lines[9][4:]] + lines[10:]
        assert report["after_completion"] == "\n".join(inserted).removesuffix(
            "\n"
        )  # a buffer has no last EOL
        assert report["accepted"] is True
    else:  # tiny models: nothing passed its checks, and the buffer is untouched
        assert report["after_completion"] == SOURCE.rstrip("\n")
    # the explain action inserts a comment above the selection: the buffer holds exactly that edit
    [edit] = report["edit"]["changes"][file.as_uri()]
    assert edit["range"]["start"] == {"line": 3, "character": 0} == edit["range"]["end"]
    comment = edit["newText"].rstrip("\n").split("\n")
    assert comment and all(line.startswith("#") for line in comment)
    before = report["after_completion"].split("\n")
    assert report["after_action"].split("\n") == before[:3] + comment + before[3:]
