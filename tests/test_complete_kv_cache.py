"""Stable-part-first prompts on a real llama.cpp model: the next keystroke re-evaluates only the new tokens.

Measured with llama.cpp's own counter of prompt tokens evaluated (``llama_perf_context``), per generation, on
the bundled SmolLM2 through the same completion path the language server uses."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from polyfuse.code.complete import complete_text
from polyfuse.code.task import CodeEnv
from polyfuse.config import load_config
from polyfuse.errors import NoSurvivorsError
from polyfuse.providers.registry import ProviderHub

pytestmark = pytest.mark.local

SOURCE = (Path(__file__).parents[1] / "src/polyfuse/fusion/agreement.py").read_text()


def _evaluated(hub: ProviderHub) -> tuple[int, int]:
    runtime = hub.local_runtime
    return runtime.prompt_tokens, runtime.prompt_evaluated


async def test_the_next_keystroke_reuses_the_kv_cache_and_a_new_context_does_not(tmp_path):
    config = load_config(data={"code": {"pool": ["local/smollm2-135m"], "judge": "local/smollm2-135m"}})
    async with ProviderHub.from_config(config) as hub:
        env = CodeEnv.create(config, hub, complete_max_tokens=4)
        cursor = SOURCE.index("def similarity") + len("def similarity")
        path = tmp_path / "agreement.py"

        async def keystroke(text: str, offset: int, context: str) -> tuple[int, int]:
            before = _evaluated(hub)
            with contextlib.suppress(NoSurvivorsError):  # what the model wrote does not matter here
                await complete_text(env, text, offset, path, context=context)
            after = _evaluated(hub)
            return after[0] - before[0], after[1] - before[1]

        given, evaluated = await keystroke(SOURCE, cursor, "--- a.py ---\nA = 1\n")
        assert given > 300 and evaluated >= given - 2  # a cold cache evaluates the whole prompt
        typed = SOURCE[:cursor] + "_" + SOURCE[cursor:]
        given, evaluated = await keystroke(typed, cursor + 1, "--- a.py ---\nA = 1\n")
        assert given > 300 and evaluated < given // 4, (given, evaluated)  # only what follows the cursor
        # the same keystroke with other related files: the stable part changed, so nearly everything is new
        given, evaluated = await keystroke(typed, cursor + 1, "--- b.py ---\nB = 2\n")
        assert evaluated > given // 2, (given, evaluated)
