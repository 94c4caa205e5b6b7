"""Issue 9: schemathesis against the live app (fake hypervisor behind it).

Every operation of ``/v1/openapi.json`` gets positive and negative cases, once with the ids
of a real project, router (NIO on 0/0) and Ethernet switch (NIO on port 1) so the deep code
paths run, and once with random ids. Each response must: not be a 5xx, use a documented
status code and content type, match the documented schema, reject negative data with a 4xx,
and every error body must carry ``status`` (equal to the HTTP status) and ``message``.
After each case the fixed objects are restored if the case deleted them, and anything the
case created is deleted again, so the run stays bounded and the ids stay real.

Deterministic (derandomized Hypothesis, no example database). ``test_fuzz_every_route`` is the
bounded CI run; ``test_fuzz_every_route_long`` (``-m slow``) draws many more examples.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Api

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
STREAMS = {"notifications", "stream_file", "read_file", "docs"}  # operationIds
REQUEST_TIMEOUT = 30.0
MAX_EXAMPLES = 15  # per operation and variant: about half a minute on 2 cores


@dataclass
class Fixed:
    """The real objects the cases aim at, and what is needed to rebuild them."""

    project_id: str
    vm_id: str
    device_id: str
    project_path: str
    created: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    calls: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    per_operation: dict[str, float] = field(default_factory=dict)


class Runner:
    """Runs the cases (in a worker thread: the app's event loop stays free to answer)."""

    def __init__(self, base: str, fixed: Fixed, scratch: Path) -> None:
        self.base = base
        self.fixed = fixed
        self.scratch = scratch
        self.http = requests.Session()
        self.outcome = Outcome()

    # -- plain HTTP helpers for set-up and restore ---------------------------------------
    def _call(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.http.request(
            method,
            self.base + path,
            data=json.dumps(body) if body is not None else None,
            timeout=REQUEST_TIMEOUT,
        )

    def restore(self) -> None:
        """Bring back the fixed project, router, switch and their NIOs if a case removed them."""
        f = self.fixed
        reply = self._call("POST", "/v1/projects", {"project_id": f.project_id, "name": "fuzz"})
        assert reply.status_code == 201, reply.text
        vm = f"/v1/projects/{f.project_id}/dynamips/vms/{f.vm_id}"
        if self._call("GET", vm).status_code == 404:
            body = {"vm_id": f.vm_id, "name": "R1", "platform": "c7200"}
            body |= {"image": "c7200.image", "ram": 256}
            reply = self._call("POST", f"/v1/projects/{f.project_id}/dynamips/vms", body)
            assert reply.status_code == 201, reply.text
        dev = f"/v1/projects/{f.project_id}/dynamips/devices/{f.device_id}"
        if self._call("GET", dev).status_code == 404:
            body = {"device_id": f.device_id, "name": "SW1", "device_type": "ethernet_switch"}
            reply = self._call("POST", f"/v1/projects/{f.project_id}/dynamips/devices", body)
            assert reply.status_code == 201, reply.text
        if self._call("GET", f"{vm}/adapters/0/ports/0/nio/stats").status_code != 200:
            self._call("POST", f"{vm}/adapters/0/ports/0/nio", self._udp_nio())
        if self._call("GET", f"{dev}/ports/1/nio/stats").status_code != 200:
            self._call("POST", f"{dev}/ports/1/nio", {"nio": self._udp_nio()})

    def _udp_nio(self) -> dict[str, Any]:
        reply = self._call("POST", f"/v1/projects/{self.fixed.project_id}/ports/udp", {})
        port = reply.json()["udp_port"] if reply.status_code == 201 else 1
        return {"type": "nio_udp", "lport": port, "rhost": "127.0.0.1", "rport": 9}

    def forget_created(self, case: Any, response: requests.Response) -> None:
        """Delete what a successful create made (the fixed ids excepted)."""
        if response.status_code != 201 or case.method != "POST":
            return
        try:
            data = response.json()
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        project = case.path_parameters.get("project_id") if case.path_parameters else None
        f = self.fixed
        if "vm_id" in data and data["vm_id"] != f.vm_id:
            self._call("DELETE", f"/v1/projects/{project}/dynamips/vms/{data['vm_id']}")
        elif "device_id" in data and data["device_id"] != f.device_id:
            self._call("DELETE", f"/v1/projects/{project}/dynamips/devices/{data['device_id']}")
        elif case.path == "/v1/projects" and data.get("project_id") not in (None, f.project_id):
            self._call("DELETE", f"/v1/projects/{data['project_id']}")

    # -- one case ------------------------------------------------------------------------
    def sanitize(self, case: Any) -> bool:
        """Keep every side effect inside the test's folders and on loopback (no name lookup);
        True when a value was replaced (a negative case may then have become valid)."""
        body = case.body
        if not isinstance(body, dict):
            return False
        changed = False
        path = body.get("path")
        if case.path.startswith("/v1/projects") and isinstance(path, str) and path:
            digest = hashlib.md5(path.encode("utf-8", "replace")).hexdigest()[:12]
            body["path"], changed = str(self.scratch / digest), True
        for holder in (body, body.get("nio")):
            if isinstance(holder, dict) and isinstance(holder.get("rhost"), str):
                holder["rhost"], changed = "127.0.0.1", True
        return changed

    def execute(self, case: Any, mode: GenerationMode, *, real: bool) -> None:
        label = f"{case.method} {case.path} [{mode.value}{', real ids' if real else ''}]"
        if self.sanitize(case):
            mode = GenerationMode.POSITIVE  # what made it negative may be gone: skip that check
        started = time.monotonic()
        try:
            if case.operation.definition.raw.get("operationId") in STREAMS:
                # a stream never ends: look at the status, read only finite (error) bodies
                kwargs = case.as_transport_kwargs(base_url=self.base)
                with self.http.request(**kwargs, stream=True, timeout=REQUEST_TIMEOUT) as response:
                    if response.status_code >= 400:
                        self._check(case, response, mode, label)
                    else:
                        self._record(response.status_code)
            else:
                response = case.call(base_url=self.base, session=self.http, timeout=REQUEST_TIMEOUT)
                self._check(case, response, mode, label)
                self.forget_created(case, response)
        except (Exception, FailureGroup) as err:  # every problem is a finding
            self.outcome.failures.append(
                f"{label}: {type(err).__name__}: {err}\n  {case.as_curl_command()}"
            )
        finally:
            elapsed = time.monotonic() - started
            self.outcome.per_operation[label] = self.outcome.per_operation.get(label, 0) + elapsed
            if self._may_have_removed(case):
                self.restore()

    @staticmethod
    def _may_have_removed(case: Any) -> bool:
        """Cases after which the fixed objects or their NIOs may be gone."""
        path = case.path
        return (
            case.method == "DELETE"
            or path.endswith(("/close", "/server/shutdown"))
            or (case.method == "PUT" and path == "/v1/projects/{project_id}")
        )

    def _record(self, status: int) -> None:
        self.outcome.calls += 1
        self.outcome.statuses[status] = self.outcome.statuses.get(status, 0) + 1

    def _check(self, case: Any, response: requests.Response, mode, label: str) -> None:
        self._record(response.status_code)
        checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS
        problems = []
        try:
            case.validate_response(response, checks=checks)
        except (Exception, FailureGroup) as err:  # a check failure (possibly several)
            problems.append(str(err).strip().splitlines()[0:12])
        if response.status_code >= 400:
            try:
                data = response.json()
            except ValueError:
                data = None
            if not (
                isinstance(data, dict)
                and data.get("status") == response.status_code
                and isinstance(data.get("message"), str)
            ):
                problems.append([f"error body without status/message: {response.text[:200]!r}"])
        if problems:
            text = "\n  ".join(line for block in problems for line in block)
            self.outcome.failures.append(
                f"{label} -> {response.status_code}\n  {text}\n  {case.as_curl_command()}"
            )

    # -- all operations ------------------------------------------------------------------
    def run(self, schema: Any, max_examples: int) -> Outcome:
        f = self.fixed
        real = {
            "project_id": f.project_id,
            "vm_id": f.vm_id,
            "device_id": f.device_id,
            "adapter_number": 0,
        }
        self.restore()
        for result in schema.get_all_operations():
            operation = result.ok()
            names = {p.name for p in operation.path_parameters}
            fixed_params = {k: v for k, v in real.items() if k in names}
            if "port_number" in names:
                fixed_params["port_number"] = 0 if "vm_id" in names else 1
            variants = [(None, GenerationMode.POSITIVE), (None, GenerationMode.NEGATIVE)]
            if fixed_params:
                variants += [(fixed_params, m) for m in GenerationMode]
            for params, mode in variants:
                try:
                    strategy = operation.as_strategy(generation_mode=mode, path_parameters=params)
                except Exception as err:
                    self.outcome.failures.append(f"{operation.label}: no strategy: {err}")
                    continue

                began, calls = time.monotonic(), self.outcome.calls
                self._explore(strategy, mode, max_examples, real=params is not None)
                print(
                    f"{operation.label} [{mode.value}{', real ids' if params else ''}]: "
                    f"{self.outcome.calls - calls} calls in {time.monotonic() - began:.1f} s",
                    flush=True,
                )
        return self.outcome

    def _explore(
        self, strategy: Any, mode: GenerationMode, max_examples: int, *, real: bool
    ) -> None:
        @settings(
            max_examples=max_examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def each(case: Any) -> None:
            self.execute(case, mode, real=real)

        try:
            each()
        except Unsatisfiable:
            pass  # nothing negative to say about this operation


async def _fuzz(api: Api, tmp_path: Path, max_examples: int) -> Outcome:
    for key, value in (("idlepc_boot_timeout", 1.0), ("idlepc_measure_seconds", 0.05)):
        api.state.config.values[("Dynamips", key)] = value  # auto idle-PC: fast with the fake
    document = (await api.get("/v1/openapi.json")).body
    schema = schemathesis.openapi.from_dict(document)
    project_id = await api.project(name="fuzz")
    router = await api.router(project_id)
    switch = await api.device(project_id)
    fixed = Fixed(project_id, router["vm_id"], switch["device_id"], str(tmp_path))
    scratch = tmp_path / "fuzz-paths"
    scratch.mkdir()
    runner = Runner(api.base, fixed, scratch)
    outcome = await asyncio.to_thread(runner.run, schema, max_examples)
    slowest = sorted(outcome.per_operation.items(), key=lambda item: -item[1])[:5]
    print(f"\nfuzz: {outcome.calls} calls, statuses {sorted(outcome.statuses.items())}")
    print("slowest:", ", ".join(f"{label} {seconds:.1f}s" for label, seconds in slowest))
    return outcome


async def test_fuzz_every_route(api, tmp_path):
    """No 5xx, no contract violation, every error body has status and message."""
    outcome = await _fuzz(api, tmp_path, max_examples=MAX_EXAMPLES)
    assert outcome.calls > 500
    assert not any(status >= 500 for status in outcome.statuses)
    assert not outcome.failures, "\n".join(outcome.failures[:40])


@pytest.mark.slow
async def test_fuzz_every_route_long(api, tmp_path):
    outcome = await _fuzz(api, tmp_path, max_examples=100)
    assert not outcome.failures, "\n".join(outcome.failures[:40])


@pytest.mark.parametrize("raw", [b"\x1d", b" ", b"\r\n", b"\x00"])
async def test_a_body_of_blanks_is_not_an_empty_body(api, raw):
    """Found by the long run: only an empty body means ``{}``; other bytes must be JSON."""
    reply = await api.post("/projects", raw=raw)
    assert reply.status == 400, reply.body
    assert set(reply.body) >= {"status", "message", "path", "request", "method"}
    assert (await api.post("/projects", raw=b"")).status == 201
    assert (await api.post("/projects", raw=b' {"name": "x"} ')).status == 201
