"""`enrichhq companies import` as a script meets it: exit codes, stdin, the progress bar (issues 17, 18)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.acceptance.test_cli import enrichhq, write
from tests.conftest import Env
from tests.helpers import count


async def test_a_header_only_file_imports_nothing_and_exits_0(env: Env, tmp_path: Path) -> None:
    result = enrichhq(
        "companies", "import", str(write(tmp_path / "c.csv", "domain,name\n")), env=env.environ()
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["0 new, 0 updated, 0 duplicates merged, 0 blank, 0 invalid"]


async def test_a_file_whose_every_row_is_invalid_exits_4_with_its_summary(env: Env, tmp_path: Path) -> None:
    path = str(write(tmp_path / "c.csv", "domain\nn/a\njane@acme.com\n"))
    result = enrichhq("companies", "import", path, env=env.environ())
    assert result.returncode == 4, result.stderr
    assert (
        result.stdout.splitlines()[0]
        == "0 new, 0 updated, 0 duplicates merged, 0 blank, 2 invalid (lines 2, 3)"
    )
    as_json = enrichhq("companies", "import", path, "--json", env=env.environ())
    assert as_json.returncode == 4 and json.loads(as_json.stdout)["invalid_lines"] == [2, 3]
    # one good row among them: the file was imported, its invalid rows listed
    mixed = enrichhq(
        "companies", "import", str(write(tmp_path / "m.csv", "domain\nn/a\nacme.com\n")), env=env.environ()
    )
    assert mixed.returncode == 0 and mixed.stdout.startswith(
        "1 new, 0 updated, 0 duplicates merged, 0 blank, 1 invalid"
    )


async def test_dash_reads_the_csv_from_stdin(env: Env) -> None:
    rows = "".join(f"https://www.co{i}.com/,Co {i}\n" for i in range(5000))  # more than the sniffed bytes
    result = subprocess.run(
        [sys.executable, "-m", "enrichhq", "companies", "import", "-"],
        input="\ufeffWebsite,Company\n" + rows + "co7.com,Seven\n",
        env=env.environ(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "5000 new, 0 updated, 1 duplicates merged, 0 blank, 0 invalid"
    assert await count(env.dbs, "hq", "companies", "WHERE domain = 'co7.com' AND name = 'Seven'") == 1


def _stderr_on_a_terminal(env: Env, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    master, slave = pty.openpty()
    environ = {**env.environ(), "TERM": "xterm", "COLUMNS": "100"}
    result = subprocess.run(
        [sys.executable, "-m", "enrichhq", *args],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
        timeout=60,
        check=False,
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other end is closed: all of it read
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return result, seen.decode("utf-8", "replace")


async def test_a_progress_bar_on_a_terminal_only_and_never_with_json(env: Env, tmp_path: Path) -> None:
    path = str(write(tmp_path / "c.csv", "domain\n" + "".join(f"co{i}.com\n" for i in range(2000))))
    result, stderr = _stderr_on_a_terminal(env, "companies", "import", path)
    assert result.returncode == 0 and result.stdout.startswith("2000 new")
    assert "importing" in stderr and "/20.9 kB" in stderr  # Rich's bar, sized by the file's bytes
    result, stderr = _stderr_on_a_terminal(env, "companies", "import", path, "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["updated"] == 2000
    assert "importing" not in stderr
    piped = enrichhq("companies", "import", path, env=env.environ())
    assert piped.returncode == 0 and piped.stderr == ""
