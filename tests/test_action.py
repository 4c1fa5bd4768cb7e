"""The composite action (action.yml): its review step, run with bash as a runner would (inputs substituted,
polyfuse on PATH), posts a review on the loopback fake of GitHub; its inputs reach polyfuse as options."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from fakegithub import FakeGitHub
from polyfuse.testing.upstream import FakeUpstream
from reviewkit import ENV, EVAL, UNUSED, G, comments, config, event, git, repo, reviewers

ACTION = Path(__file__).resolve().parent.parent / "action.yml"
TOKEN = "ghs_action_token"


def test_action_is_a_composite_that_sets_up_python_installs_and_reviews():
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    assert steps[0]["uses"].startswith("actions/setup-python@")
    assert "pip install" in steps[1]["run"] and "${GITHUB_ACTION_PATH}" in steps[1]["run"]
    assert "code review --github" in steps[2]["run"]
    # inputs reach the script through the environment, never pasted into it (no script injection)
    assert "${{" not in steps[2]["run"]
    assert action["inputs"]["github-token"]["default"] == "${{ github.token }}"


def test_the_review_step_posts_a_review(tmp_path):
    root = tmp_path / "repo"
    base, head = repo(root)
    diff = git(root, "diff", base, "--", "app.py")
    action = yaml.safe_load(ACTION.read_text())
    step = action["runs"]["steps"][2]
    with (
        FakeUpstream() as up,
        FakeGitHub(TOKEN, head_sha=head, base_sha=base, files={"app.py": diff[diff.index("@@") :]}) as gh,
    ):
        up.behaviours.update(reviewers(comments(EVAL, UNUSED), comments(EVAL, G), comments(EVAL)))
        inputs = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
        inputs.update(
            {"github-token": TOKEN, "min-agreement": "2", "config": str(config(tmp_path, up.base_url))}
        )
        env = {
            k: re.sub(r"\$\{\{ inputs\.([\w-]+) \}\}", lambda m: inputs[m.group(1)], v)
            for k, v in step["env"].items()
        }
        env.update(
            {
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "GITHUB_REPOSITORY": gh.repo,
                "GITHUB_EVENT_NAME": "pull_request",
                "GITHUB_EVENT_PATH": str(event(tmp_path, base, head)),
                "GITHUB_API_URL": gh.url,
            }
        )
        proc = subprocess.run(
            ["bash", "-e", "-c", step["run"]],
            cwd=root,
            env={**ENV, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert len(gh.reviews) == 1 and [c["line"] for c in gh.comments] == [4]  # min-agreement 2 applied
        assert "Disputed: 2" in gh.reviews[0]["body"]
