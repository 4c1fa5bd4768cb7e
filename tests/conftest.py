from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest

from pgcluster import PostgresCluster
from polyfuse.store import LogSettings
from polyfuse.testing import Reply, ScriptedModel, label_of
from polyfuse.types import Message

# Runs recorded by commands under test go to a throwaway run log, never the user's ($XDG_DATA_HOME/polyfuse).
# Set before any test module copies os.environ for its subprocesses.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="polyfuse-test-data-")


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresCluster]:
    """One real PostgreSQL cluster for the whole run (initdb takes seconds); each test makes its own database."""
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path) -> LogSettings:
    """A fresh run log on each backend: a SQLite file, and a new database on the shared PostgreSQL cluster."""
    if request.param == "sqlite":
        return LogSettings(path=str(tmp_path / "runs.db"))
    cluster = request.getfixturevalue("pg")
    return LogSettings(url=cluster.create_database(f"t_{uuid.uuid4().hex[:12]}"))


def choose_json(labels: Sequence[str], choice: str, agreement: float = 0.5) -> str:
    return json.dumps(
        {
            "scores": {lb: {"score": 9 if lb == choice else 3, "reason": "r"} for lb in labels},
            "consensus": ["c"],
            "contradictions": ["d"],
            "agreement": agreement,
            "choice": choice,
        }
    )


def write_json(answer: str, agreement: float = 0.5) -> str:
    return json.dumps(
        {"scores": {}, "consensus": [], "contradictions": [], "agreement": agreement, "answer": answer}
    )


def picker(needle: str, agreement: float = 0.5) -> Callable[[Sequence[Message]], str]:
    """A judge reply that chooses whichever candidate contains ``needle`` (labels are shuffled)."""

    def fn(messages: Sequence[Message]) -> str:
        label = label_of(messages, needle)
        return json.dumps(
            {
                "scores": {label: {"score": 9, "reason": "right"}},
                "consensus": [],
                "contradictions": [],
                "agreement": agreement,
                "choice": label,
            }
        )

    return fn


def upstream_picker(needle: str) -> Callable[[dict], str]:
    """The same judge for a FakeUpstream model (``Behaviour(reply=...)``): the request body in, a verdict out."""
    pick = picker(needle)

    def reply(body: dict) -> str:
        return pick([Message(role=m["role"], content=m.get("content")) for m in body["messages"]])

    return reply


@pytest.fixture
def pool3() -> dict[str, ScriptedModel]:
    return {
        "a": ScriptedModel("a", default="Paris"),
        "b": ScriptedModel("b", default="Paris, France."),
        "c": ScriptedModel("c", default="Lyon"),
        "judge": ScriptedModel("judge", default=Reply(fn=picker("France"))),
    }
