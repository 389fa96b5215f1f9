"""`enrichhq serve` fuzzed against its own OpenAPI document by schemathesis (issue 13, point 13).

The server runs as a user starts it (a subprocess on SQLite in a temporary data directory, with
ENRICHHQ_API_KEY), with a workflow, companies and a batch in it so that the operations on
`{ref}` and `{batch_id}` reach real rows. schemathesis' own command line then sends at most
MAX_EXAMPLES generated requests per operation and phase, with the key, and must find nothing:

- no 5xx (not_a_server_error);
- every answer as documented: its status, content type, headers and body schema;
- a 405 naming the allowed methods (allow_header_conformance, unsupported_method);
- the key enforced where the document says it is (ignored_auth, missing_required_header).

Not gated: positive_data_acceptance and negative_data_rejection. The document declares what it
can (formats, patterns, lengths, "one of these fields", no NUL anywhere), but some refusals are
about the data, not its shape (a workflow whose destination table does not exist, a CSV without a
domain column), and the API takes more than it declares (a URL for a domain).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import free_port

KEY = "schemathesis-key"
MAX_EXAMPLES = 50
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "allow_header_conformance",
    "unsupported_method",
    "ignored_auth",
    "missing_required_header",
)
#: the whole run on this 2-core machine takes about a minute; far past it something hangs.
TIMEOUT_S = 300

pytestmark = pytest.mark.contract


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """`enrichhq serve` on SQLite in tmp_path; yields its base URL."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HQ_", "WORKSPACE_", "ZENROWS_"))}
    environ |= {"ENRICHHQ_DATA_DIR": str(tmp_path / "data"), "ENRICHHQ_API_KEY": KEY}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "enrichhq", "serve", "--port", str(port)],
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def seed(url: str) -> dict[str, str]:
    """Companies, a workflow and a batch of it; returns the path parameters that name them."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
        imported = client.post(
            "/api/v1/companies/import",
            content=b"domain,name\nacme-contract.com,Acme\nbeta-contract.io,Beta\n",
            headers={"content-type": "text/csv"},
        )
        assert imported.status_code == 200, imported.text
        workflow = {
            "workflow_slug": "contract-homepage",
            "title": "Homepage",
            "overall_step_number": 1,
            "provider": "http",
            "destination_table_name": "contract_homepages",
            "destination_field_mappings": {"html": "homepage_html"},
            # Nothing listens on port 9: the calls fail at once, and the batch has failures to retry.
            "provider_config": {"url_template": "http://127.0.0.1:9/{domain}/", "max_attempts": 1},
        }
        created = client.post("/api/v1/workflows", params={"create_table": "true"}, json=workflow)
        assert created.status_code == 201, created.text
        started = client.post(
            "/functions/v1/run_step", json={"workflow_slug": "contract-homepage", "all": True}
        )
        assert started.status_code == 202, started.text
        return {"ref": "contract-homepage", "batch_id": started.json()["batch_id"]}


#: change it on purpose to explore other cases (schemathesis prints the seed of every run).
SEED = 20261202


def test_the_api_answers_as_its_openapi_document_says(served: str, tmp_path: Path) -> None:
    names = seed(served)
    config = tmp_path / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f'"path.{k}" = "{v}"\n' for k, v in names.items()))
    started = time.monotonic()
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--no-color",
            "--config-file",
            str(config),
            "run",
            f"{served}/openapi.json",
            "--header",
            f"Authorization: Bearer {KEY}",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--workers",
            "1",
            # A fixed seed: CI runs the same cases every time (a finding is reproducible), and a
            # generator health check on rarely-valid inputs cannot turn a run red by chance.
            "--seed",
            str(SEED),
            "--suppress-health-check",
            "filter_too_much",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        cwd=tmp_path,
    )
    seconds = time.monotonic() - started
    cases = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    print(f"schemathesis: {seconds:.0f} s, {cases[0] if cases else 'no count'}")
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert cases is not None and cases[1] == cases[2] and int(cases[1]) > 1000, result.stdout[-5000:]
