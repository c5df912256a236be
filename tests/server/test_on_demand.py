"""Models loaded on demand (`preload: false`), unloaded when idle (`keep_alive`), and kept within a memory budget
(EMBEDSERVE_MODEL_MEMORY_BYTES): what a request sees, what /v1/models, readiness and /metrics say, and what the
process's memory does.

Memory is read as the process's RSS growth over a baseline taken once the app has started (the app runs in this
process) and has loaded a first model (what every load shares is paid once, then). Its model folders are exported to ONNX before the app starts, so loads measure serving, not exporting.
Nothing waits on the clock: each test polls for the state it expects, with a generous deadline.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from embedserve.models.memory import rss_bytes
from embedserve.models.spec import ModelSpec
from embedserve.quantize.served_export import resolve_backend
from embedserve.server.malloc import trim
from embedserve.server.serving import model_host
from embedserve.server.serving.footprint import weight_bytes
from tests.fixtures.tiny_models import bert_embedder
from tests.inprocess import AppServer, start_app
from tests.support import metric, until

MODELS = 6
WIDE = 256
"""The hidden size of the models whose memory is measured: 5.9 MiB of weights each, which shows in the process's
RSS above its noise (the usual tiny BERT's 0.3 MiB does not)."""
BIG = 512
"""The hidden size of the model whose unloading is measured: 24 MiB of weights, so that its load and its return
stand far above what a long test session's heap lends or keeps back. At WIDE, a CI run saw a load grow RSS by 0.9x
its weights (2x with this file alone); at BIG, 1.3-1.6x with this file alone."""
DEADLINE = 60.0


@pytest.fixture(scope="module")
def wide_models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six distinct BERT embedders (seeds 0-5) of equal size, their ONNX exports made."""
    root = tmp_path_factory.mktemp("wide")
    folders = [bert_embedder(root / f"m{seed}", seed=seed, hidden=WIDE) for seed in range(MODELS)]
    for folder in folders:
        resolve_backend(ModelSpec(id=folder.name, source=str(folder)))
    return folders


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One BERT embedder of hidden BIG, its ONNX export made."""
    folder = bert_embedder(tmp_path_factory.mktemp("big") / "big", hidden=BIG)
    resolve_backend(ModelSpec(id=folder.name, source=str(folder)))
    return folder


def serve(tmp_path: Path, entries: list[dict[str, Any]], env: dict[str, str] | None = None) -> AppServer:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": entries}))
    return start_app(None, "--models", str(path), env=env)


def status(server: AppServer, model: str) -> str:
    return server.http.get(f"/v1/models/{model}").json()["status"]


def embed(server: AppServer, model: str, text: str = "a short text") -> httpx.Response:
    return server.http.post("/v1/embeddings", json={"model": model, "input": text})


async def until_async(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)


def settled_rss() -> int:
    gc.collect()
    trim()
    return rss_bytes()


class PeakRss:
    """The process's highest RSS while it runs (sampled every 5 ms in a thread)."""

    def __init__(self) -> None:
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MB"


# -- loading on demand -------------------------------------------------------------------------


def test_readiness_does_not_wait_for_a_model_loaded_on_demand(tmp_path: Path, tiny_bert_dir: Path) -> None:
    server = serve(
        tmp_path,
        [{"id": "kept", "source": str(tiny_bert_dir)}, {"id": "lazy", "source": str(tiny_bert_dir), "preload": False}],
    )
    try:
        ready = server.http.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["models"] == {"kept": "loaded", "lazy": "unloaded"}
        assert metric(server, "embed_model_loads_total", model="lazy") == 0
    finally:
        server.stop()


def test_concurrent_first_requests_wait_on_one_load(
    tmp_path: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight requests arrive while the model loads (its load held until they all wait): none is refused, and
    the model is loaded once."""
    gate = threading.Event()
    load = model_host._load

    def held_load(*args: Any) -> Any:
        assert gate.wait(DEADLINE)
        return load(*args)

    monkeypatch.setattr(model_host, "_load", held_load)
    server = serve(tmp_path, [{"id": "lazy", "source": str(tiny_bert_dir), "preload": False}])
    try:
        assert status(server, "lazy") == "unloaded"

        async def clients() -> list[httpx.Response]:
            async with server.async_http() as http:
                requests = [
                    asyncio.create_task(http.post("/v1/embeddings", json={"model": "lazy", "input": f"text {i}"}))
                    for i in range(8)
                ]
                await until_async(lambda: status(server, "lazy") == "loading", "the model loading")
                assert server.http.get("/health/ready").status_code == 200  # readiness does not wait for it
                assert not any(request.done() for request in requests)
                gate.set()
                return await asyncio.gather(*requests)

        answers = asyncio.run(clients())
        assert [answer.status_code for answer in answers] == [200] * 8
        assert metric(server, "embed_model_loads_total", model="lazy", outcome="loaded") == 1
        assert metric(server, "embed_model_load_duration_seconds_count", model="lazy") == 1
        assert status(server, "lazy") == "loaded"
    finally:
        gate.set()
        server.stop()


def test_models_list_each_models_status(tmp_path: Path, tiny_bert_dir: Path, wide_models: list[Path]) -> None:
    """loaded, unloaded (not yet, or no longer), failed (with why); `loading` is seen in the test
    above, while a load is held."""
    budget = 4 * weight_bytes(ModelSpec(id="tiny", source=str(tiny_bert_dir)))
    server = serve(
        tmp_path,
        [
            {"id": "kept", "source": str(tiny_bert_dir)},
            {"id": "lazy", "source": str(tiny_bert_dir), "preload": False},
            {"id": "huge", "source": str(wide_models[0]), "preload": False},
        ],
        env={"EMBEDSERVE_MODEL_MEMORY_BYTES": str(budget)},
    )
    try:

        def statuses() -> dict[str, tuple[str, str | None]]:
            return {
                card["id"]: (card["status"], card["error"]) for card in server.http.get("/v1/models").json()["data"]
            }

        assert statuses() == {"kept": ("loaded", None), "lazy": ("unloaded", None), "huge": ("unloaded", None)}
        assert embed(server, "lazy").status_code == 200
        assert embed(server, "huge").status_code == 503
        listed = statuses()
        assert listed["kept"] == ("loaded", None) and listed["lazy"] == ("loaded", None)
        assert listed["huge"][0] == "failed" and "cannot be loaded here" in (listed["huge"][1] or "")
    finally:
        server.stop()


def test_a_model_larger_than_the_budget_gets_503_saying_why_in_each_routes_shape(
    tmp_path: Path, wide_models: list[Path]
) -> None:
    need = weight_bytes(ModelSpec(id="huge", source=str(wide_models[0])))
    server = serve(
        tmp_path,
        [{"id": "huge", "source": str(wide_models[0]), "preload": False}],
        env={"EMBEDSERVE_MODEL_MEMORY_BYTES": str(need // 2)},
    )
    why = (
        f"model 'huge' needs about {need / 2**20:.1f} MiB (its weight files) and the server's model memory budget "
        f"(EMBEDSERVE_MODEL_MEMORY_BYTES) is {need // 2 / 2**20:.1f} MiB: it cannot be loaded here"
    )
    try:
        openai = embed(server, "huge")
        assert openai.status_code == 503 and "retry-after" not in openai.headers  # it never will fit
        assert openai.json()["error"] == {
            "message": why,
            "type": "server_error",
            "param": None,
            "code": "over_memory_budget",
        }
        tei = server.http.post("/embed", json={"model": "huge", "inputs": "a short text"})
        assert (tei.status_code, tei.json()) == (503, {"error": why, "error_type": "Unavailable"})
        cohere = server.http.post(
            "/v2/embed", json={"model": "huge", "texts": ["a short text"], "input_type": "search_query"}
        )
        assert cohere.status_code == 503 and cohere.json()["message"] == why
        assert server.http.get("/health/ready").status_code == 200  # the server serves on
        assert metric(server, "embed_model_loads_total", model="huge", outcome="loaded") == 0
    finally:
        server.stop()


def test_a_model_that_fails_to_load_on_demand_says_why_and_a_later_request_tries_again(
    tmp_path: Path, tiny_bert_dir: Path
) -> None:
    """A load made for a request that fails is not final (unlike one at start, which stops the server unless
    told otherwise): the request gets 503 with the load's error, and the next request loads it again, so a
    folder put right is served without a restart."""
    folder = shutil.copytree(tiny_bert_dir, tmp_path / "broken")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    server = serve(
        tmp_path, [{"id": "broken", "source": str(folder), "kind": "embed", "backend": "torch", "preload": False}]
    )
    try:
        failed = embed(server, "broken")
        assert failed.status_code == 503
        message = failed.json()["error"]["message"]
        assert message.startswith("model 'broken' failed to load: ") and message.endswith(
            "(a later request tries again)"
        )
        card = server.http.get("/v1/models/broken").json()
        assert card["status"] == "failed" and card["error"]
        assert metric(server, "embed_model_loads_total", model="broken", outcome="failed") == 1
        assert server.http.get("/health/ready").status_code == 200

        shutil.copy(tiny_bert_dir / "model.safetensors", folder / "model.safetensors")
        assert embed(server, "broken").status_code == 200
        card = server.http.get("/v1/models/broken").json()
        assert card["status"] == "loaded" and card["error"] is None
    finally:
        server.stop()


# -- unloading ---------------------------------------------------------------------------------


def test_an_idle_model_is_unloaded_after_its_keep_alive_and_its_memory_is_returned(
    tmp_path: Path, big_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(tmp_path, [{"id": "brief", "source": str(big_model), "preload": False, "keep_alive": 0.2}])
    try:
        before = settled_rss()
        with PeakRss() as during:
            assert embed(server, "brief").status_code == 200
            until(lambda: '"model unloaded"' in server.log(), "the model unloaded after its keep_alive")
        after = settled_rss()
        with capsys.disabled():
            print(f"\nkeep_alive: RSS growth loaded {mb(during.peak - before)}, unloaded {mb(after - before)}")

        assert status(server, "brief") == "unloaded"
        assert metric(server, "embed_model_unloads_total", model="brief", reason="idle") == 1
        assert metric(server, "embed_model_ready", model="brief") == 0
        assert metric(server, "embed_model_memory_bytes", model="brief") == 0
        weights = weight_bytes(ModelSpec(id="brief", source=str(big_model)))
        assert during.peak - before > weights / 2, "the loaded model's memory shows"
        assert after - before < (during.peak - before) / 2, "most of what it took is returned"

        assert embed(server, "brief").status_code == 200  # the next request loads it again
        assert metric(server, "embed_model_loads_total", model="brief", outcome="loaded") == 2
    finally:
        server.stop()


def test_a_preloaded_model_unloads_after_its_keep_alive_and_the_server_stays_ready(
    tmp_path: Path, tiny_bert_dir: Path
) -> None:
    server = serve(tmp_path, [{"id": "kept", "source": str(tiny_bert_dir), "keep_alive": 0}])
    try:
        until(lambda: status(server, "kept") == "unloaded", "the preloaded model unloaded")
        assert server.http.get("/health/ready").status_code == 200  # it loaded once; a request loads it again
        assert embed(server, "kept").status_code == 200
        assert metric(server, "embed_model_loads_total", model="kept", outcome="loaded") == 2
    finally:
        server.stop()


# -- the memory budget -------------------------------------------------------------------------


def test_a_load_waits_while_models_in_use_hold_the_room_and_then_evicts_them(
    tmp_path: Path, tiny_bert_dir: Path
) -> None:
    """Room for one model: while a request holds `a`, a request for `b` waits (here past its deadline: 503 with
    Retry-After); once `a` is let go, `b` is loaded in its place."""
    budget = weight_bytes(ModelSpec(id="tiny", source=str(tiny_bert_dir)))
    server = serve(
        tmp_path,
        [{"id": name, "source": str(tiny_bert_dir), "preload": False} for name in ("a", "b")],
        env={"EMBEDSERVE_MODEL_MEMORY_BYTES": str(budget)},
    )
    host = server.app.state.host
    try:  # held as a request holds it, from routing to its answer
        asyncio.run_coroutine_threadsafe(host.acquire("a", "embed"), server._loop).result(DEADLINE)
        waited = server.http.post(
            "/v1/embeddings", json={"model": "b", "input": "a short text"}, headers={"X-Request-Timeout": "0.5"}
        )
        assert waited.status_code == 503 and waited.headers["retry-after"] == "5"
        error = waited.json()["error"]
        assert error["code"] == "over_memory_budget" and "held by models in use (a)" in error["message"]
        assert status(server, "a") == "loaded"

        server._loop.call_soon_threadsafe(host.release, "a")
        assert embed(server, "b").status_code == 200
        assert status(server, "a") == "unloaded"
        assert metric(server, "embed_model_unloads_total", model="a", reason="evicted") == 1
    finally:
        server.stop()


OVERHEAD = 36 * 2**20
"""What the process may hold beyond the budget's count of weight files. Per model in memory or loading, ONNX
Runtime's session, its arena and the tokenizer, and the session build's passing copies of the graph (8-9 MB of
RSS for each model of 5.9 MB of weights, measured), and the heap's fragments after many loads and unloads.
Measured on this test's load (peak RSS growth over the baseline): 19-37 MB in six runs with the budget of two;
60 MB with a budget for all six (nothing evicted), which this bound (47.7 MB) refuses."""


def test_six_models_under_a_budget_for_two_answer_as_preloaded_within_the_budget(
    tmp_path: Path, wide_models: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [folder.name for folder in wide_models]
    entries = [{"id": model_id, "source": str(folder)} for model_id, folder in zip(ids, wide_models, strict=True)]
    budget = 2 * weight_bytes(ModelSpec(id=ids[0], source=str(wide_models[0])))  # exactly two of them
    work = [
        (client, ids[(client + turn) % MODELS], f"client {client} turn {turn}")
        for client in range(8)
        for turn in range(6)
    ]

    on_demand = serve(
        tmp_path, [{**entry, "preload": False} for entry in entries], env={"EMBEDSERVE_MODEL_MEMORY_BYTES": str(budget)}
    )
    loaded_at_once: list[int] = []
    try:
        # A first load pays once for what every later one shares (ONNX Runtime's modules and environment, the
        # tokenizers): ~50 MB, before the baseline. That model stays, and is evicted like the others.
        assert embed(on_demand, ids[0], "warm up").status_code == 200
        baseline = settled_rss()

        async def client(http: httpx.AsyncClient, number: int) -> list[tuple[str, str, httpx.Response]]:
            answers = []
            for _, model_id, text in (item for item in work if item[0] == number):
                answers.append(
                    (model_id, text, await http.post("/v1/embeddings", json={"model": model_id, "input": text}))
                )
                loaded_at_once.append(sum(state == "loaded" for state in on_demand.app.state.host.status.values()))
            return answers

        async def clients() -> list[tuple[str, str, httpx.Response]]:
            async with on_demand.async_http() as http:
                return [
                    answer
                    for answers in await asyncio.gather(*(client(http, n) for n in range(8)))
                    for answer in answers
                ]

        with PeakRss() as peak:
            answers = asyncio.run(clients())
        evicted = sum(
            metric(on_demand, "embed_model_unloads_total", model=model_id, reason="evicted") for model_id in ids
        )
        loads = sum(metric(on_demand, "embed_model_loads_total", model=model_id, outcome="loaded") for model_id in ids)
    finally:
        on_demand.stop()
    with capsys.disabled():
        print(
            f"\nbudget {mb(budget)}: peak RSS growth {mb(peak.peak - baseline)} (bound {mb(budget + OVERHEAD)}); "
            f"{loads:.0f} loads, {evicted:.0f} evictions"
        )

    assert [response.status_code for _, _, response in answers] == [200] * len(work), [
        response.text for _, _, response in answers if response.status_code != 200
    ]
    assert evicted > 0 and max(loaded_at_once) <= 2
    assert peak.peak - baseline < budget + OVERHEAD

    preloaded = serve(tmp_path, entries)
    try:
        for model_id, text, response in answers:
            expected = embed(preloaded, model_id, text).json()["data"][0]["embedding"]
            np.testing.assert_allclose(response.json()["data"][0]["embedding"], expected, rtol=0, atol=1e-6)
    finally:
        preloaded.stop()
