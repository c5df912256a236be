"""Both images, built for real (podman) and run as the README's `docker run` lines run them.

amd64 (Dockerfile): the bundled MiniLM, /health/ready, the image's own HEALTHCHECK, /v1/embeddings equal to
sentence-transformers on this machine, user 10001, a models folder mounted at /models, and `stop -t 40` draining
an in-flight request to exit 0.
arm64 (Dockerfile.arm64) on emulated aarch64 presenting an Oracle A1's CPU (Neoverse-N1): an INT8 folder made by
`embedserve quantize --target arm64` mounted at /models, the same checks, `uname -m` aarch64 and no torch in the image.
How it is built and what it needs: tests/deploy/images.py; `make test-images` runs this file and the compose test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.deploy import images
from tests.support import ROOT, cosine_rows

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # builds images (minutes; more on a cold cache)

# The INT8 image against sentence-transformers (fp32, x86) over SENTENCES: (mean, min) cosine floors, the
# quantize gate's own (mean >= 0.997, worst text >= 0.99; per-row INT8 reached 0.9995 / 0.9992 here under
# emulated Neoverse-N1).
INT8_COSINE_FLOOR = (0.997, 0.99)
TORCH_COSINE_FLOOR = 0.9999

# Held out from models/texts.py (what quantize calibrates and judges on): the image is judged on other sentences.
SENTENCES = [
    "A man is playing a guitar on the street corner.",
    "The children built a sandcastle near the water.",
    "How can I change the billing address on my account?",
    "The train to Berlin was delayed by forty minutes.",
    "Bananas are a good source of potassium.",
    "Our team shipped the new search feature last week.",
    "The museum is closed on Mondays and public holidays.",
    "A woman is slicing tomatoes in the kitchen.",
    "What is the boiling point of water at high altitude?",
    "The server returned an error after the update.",
    "Solar panels work less efficiently on cloudy days.",
    "He forgot his umbrella and got soaked in the rain.",
    "The contract must be signed by both parties before Friday.",
    "Dogs need regular exercise to stay healthy.",
    "The recipe calls for two cups of flour and one egg.",
    "Interest rates were left unchanged by the central bank.",
    "She is learning to speak Japanese before her trip.",
    "The bridge was closed for repairs over the weekend.",
    "Which programming language should I learn first?",
    "A flock of birds flew south over the lake.",
    "The laptop battery lasts about ten hours.",
    "Please restart the router if the connection drops.",
    "The orchestra played a symphony by Beethoven.",
    "Volcanic eruptions can disrupt air travel for days.",
    "The new library has a large collection of rare books.",
    "Two men are fighting in a crowded bar.",
    "The vaccine trial enrolled over ten thousand volunteers.",
    "My flight was cancelled because of the snowstorm.",
    "The garden is full of roses and tulips in spring.",
    "A database index speeds up queries on large tables.",
]


def _embeddings(url: str, texts: list[str], timeout: float = 600, model: str | None = None) -> tuple[str, np.ndarray]:
    body = {"input": texts, **({"model": model} if model else {})}
    response = httpx.post(f"{url}/v1/embeddings", json=body, timeout=timeout)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["model"], np.array([row["embedding"] for row in body["data"]])


def _healthcheck(running: images.Container) -> int:
    """The image's own HEALTHCHECK command, run in the container (`podman healthcheck run`)."""
    return images.podman("healthcheck", "run", running.name, check=False, timeout=120).returncode


def _stop_while_serving(
    running: images.Container, texts: list[str], model: str | None = None
) -> tuple[int, int | None]:
    """`podman stop -t 40` while a request is in flight: its status (None if it never answered) and the exit code."""
    outcome: dict[str, int] = {}

    def send() -> None:
        try:
            outcome["status"] = httpx.post(
                f"{running.url}/v1/embeddings",
                json={"input": texts, **({"model": model} if model else {})},
                timeout=120,
            ).status_code
        except httpx.HTTPError:
            pass

    client = threading.Thread(target=send)
    client.start()
    time.sleep(1)  # the request reaches the server; if it has already finished, the stop still has to exit 0
    code, seconds = images.stop(running)
    client.join(150)
    images.record(f"stop -t 40 {running.name}", seconds, exit_code=code)
    return code, outcome.get("status")


def test_image_config_keeps_the_healthcheck_user_and_entrypoint(amd64_image: str) -> None:
    config = json.loads(images.podman("image", "inspect", amd64_image, "--format", "{{json .Config}}").stdout)
    assert config["User"] == "10001:10001" and config["Entrypoint"] == ["embedserve", "serve"]
    check = json.loads(images.podman("image", "inspect", amd64_image, "--format", "{{json .HealthCheck}}").stdout)
    assert "/health/ready" in " ".join(check["Test"]), "--format docker keeps HEALTHCHECK"


def test_amd64_image_serves_the_bundled_minilm_as_the_readme_runs_it(amd64_image: str, reference_model) -> None:  # type: ignore[no-untyped-def]
    # docker run -d --name embedserve -p 8000:8000 -e EMBEDSERVE_THREADS=4 embedserve
    with images.container("embedserve-test-amd64", amd64_image, "-e", "EMBEDSERVE_THREADS=4") as running:
        ready = running.wait_ready()
        images.record("ready amd64", ready)
        assert running.exec("id", "-u").stdout.strip() == "10001"
        assert _healthcheck(running) == 0, running.logs()
        # backend auto: the ONNX fp32 export made at `docker build` time, loaded, not made again
        card = httpx.get(f"{running.url}/v1/models", timeout=60).json()["data"][0]
        assert card["backend"] == "onnx", card
        assert "using the cached ONNX export" in running.logs() and "exporting to ONNX" not in running.logs()
        start = time.monotonic()
        model, vectors = _embeddings(running.url, SENTENCES)
        images.record("amd64 /v1/embeddings, 30 sentences", time.monotonic() - start)
        assert model == "all-MiniLM-L6-v2"
        cosines = cosine_rows(vectors, reference_model.encode(SENTENCES))
        images.record("amd64 cosine vs x86 torch", 0, mean=float(cosines.mean()), min=float(cosines.min()))
        assert cosines.min() >= TORCH_COSINE_FLOOR
        code, status = _stop_while_serving(running, SENTENCES * 40)
        assert code == 0, running.logs()
        assert status == 200, f"the request in flight during the stop got {status}"


def test_amd64_image_serves_a_models_file_mounted_at_models(
    amd64_image: str, minilm_dir: str, tmp_path: Path, reference_model
) -> None:  # type: ignore[no-untyped-def]
    # docker run -d -p 8000:8000 -v "$PWD/models:/models:ro" -e EMBEDSERVE_MODELS_FILE=/models/models.yaml embedserve
    models = tmp_path / "models"
    shutil.copytree(minilm_dir, models / "minilm", ignore=shutil.ignore_patterns("__pycache__"))
    (models / "models.yaml").write_text("models:\n  - id: minilm\n    source: /models/minilm\n")
    subprocess.run(["chmod", "-R", "a+rX", str(models)], check=True)
    mount = ["-v", f"{models}:/models:ro", "-e", "EMBEDSERVE_MODELS_FILE=/models/models.yaml"]
    with images.container("embedserve-test-amd64-models", amd64_image, *mount) as running:
        running.wait_ready()
        model, vectors = _embeddings(running.url, SENTENCES[:4])
        assert model == "minilm"
        assert cosine_rows(vectors, reference_model.encode(SENTENCES[:4])).min() >= TORCH_COSINE_FLOOR
        assert images.stop(running)[0] == 0, running.logs()


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory: pytest.TempPathFactory, minilm_dir: str, tiny_bge_m3_dir: Path) -> Path:
    """What an A1 user mounts: `embedserve quantize ... --out models/minilm-int8 --target arm64` of the bundled MiniLM;
    and the tiny bge-m3 with both heads the same way (forced: random weights may miss the gate)."""
    models = tmp_path_factory.mktemp("arm64-models")
    for name, source, extra in (("minilm-int8", minilm_dir, []), ("bge-m3-int8", str(tiny_bge_m3_dir), ["--force"])):
        command = [str(Path(sys.executable).parent / "embedserve"), "quantize", source, "--out", str(models / name)]
        command += ["--target", "arm64", "--bench-seconds", "0", "--no-progress", *extra]
        start = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-3000:]
        images.record(f"quantize {name} --target arm64", time.monotonic() - start)
    subprocess.run(["chmod", "-R", "a+rX", str(models)], check=True)
    return models


def test_arm64_image_serves_int8_on_emulated_aarch64_as_an_a1(
    arm64_image: str, int8_models: Path, reference_model, tiny_bge_m3_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    # docker run -d --name embedserve --restart unless-stopped -p 8000:8000 -v "$HOME/models:/models:ro" embedserve:arm64
    # (and bge-m3 beside it: -e EMBEDSERVE_MODELS=/models/minilm-int8,bge-m3=/models/bge-m3-int8)
    models = ["-e", "EMBEDSERVE_MODELS=/models/minilm-int8,bge-m3=/models/bge-m3-int8"]
    args = ["--restart", "unless-stopped", "-v", f"{int8_models}:/models:ro", *models, *images.EMULATION_RUN_ARGS]
    with images.container("embedserve-test-arm64", arm64_image, *args) as running:
        ready = running.wait_ready(timeout=900)
        images.record("ready arm64 (emulated)", ready)
        assert running.exec("uname", "-m").stdout.strip() == "aarch64"
        assert running.exec("id", "-u").stdout.strip() == "10001"
        # What qemu presents is what ONNX Runtime reads (getauxval): Neoverse-N1 has dot product, no SVE.
        probe = "import ctypes; h = ctypes.CDLL(None).getauxval(16); print(bool(h & 1 << 20), bool(h & 1 << 22))"
        assert running.exec("python", "-c", probe).stdout.split() == ["True", "False"], "asimddp, no sve"
        no_torch = "import importlib.util as u; print([m for m in ('torch', 'sentence_transformers', 'transformers') if u.find_spec(m)])"
        assert running.exec("python", "-c", no_torch).stdout.strip() == "[]"
        assert running.exec("sh", "-c", "ls -d /opt/venv/lib/python3*/site-packages/torch*").returncode != 0
        assert _healthcheck(running) == 0, running.logs()
        card = httpx.get(f"{running.url}/v1/models", timeout=60).json()["data"][0]
        assert (card["id"], card["backend"]) == ("minilm-int8", "onnx-int8")
        start = time.monotonic()
        _embeddings(running.url, SENTENCES[:2], model="minilm-int8")
        images.record("arm64 /v1/embeddings, 2 sentences (emulated)", time.monotonic() - start)
        start = time.monotonic()
        model, vectors = _embeddings(running.url, SENTENCES, model="minilm-int8")
        images.record("arm64 /v1/embeddings, 30 sentences (emulated)", time.monotonic() - start)
        assert model == "minilm-int8"
        cosines = cosine_rows(vectors, reference_model.encode(SENTENCES))
        images.record("arm64 INT8 cosine vs x86 torch", 0, mean=float(cosines.mean()), min=float(cosines.min()))
        mean_floor, min_floor = INT8_COSINE_FLOOR
        assert cosines.mean() >= mean_floor and cosines.min() >= min_floor, (cosines.mean(), cosines.min())
        _bge_m3_outputs_torch_free(running.url, tiny_bge_m3_dir)
        code, status = _stop_while_serving(running, SENTENCES, model="minilm-int8")
        assert code == 0, running.logs()
        assert status == 200, f"the request in flight during the stop got {status}"


def _bge_m3_outputs_torch_free(url: str, folder: Path) -> None:
    """bge-m3's three outputs and late chunking from its INT8 folder in the torch-free image, close to torch's
    on this host: multi-vector rows, lexical weights (mostly the same token ids), and one vector per chunk."""
    from embedserve.models.backend import MULTIVECTOR, SPARSE
    from embedserve.models.loading import load_model
    from embedserve.models.spec import ModelSpec

    model = load_model(ModelSpec(backend="torch", id="bge-m3", source=str(folder), device="cpu")).model
    tokens = model.tokenize(SENTENCES[:3])
    answer = httpx.post(f"{url}/v1/multi-vector", json={"model": "bge-m3", "input": SENTENCES[:3]}, timeout=600)
    assert answer.status_code == 200, answer.text
    for data, want in zip(answer.json()["data"], model.runner.outputs[MULTIVECTOR](tokens)):
        assert cosine_rows(np.array(data["embeddings"]), want).min() > 0.98
    sparse = httpx.post(f"{url}/embed_sparse", json={"model": "bge-m3", "inputs": SENTENCES[:3]}, timeout=600)
    assert sparse.status_code == 200, sparse.text
    for got, want in zip(sparse.json(), model.runner.outputs[SPARSE](tokens)):
        ids, expected = {item["index"] for item in got}, set(want.indices.tolist())
        assert len(ids & expected) >= 0.8 * len(expected)  # a weight near 0 may fall either side of relu in INT8
    chunks = {"model": "bge-m3", "input": SENTENCES[:3], "late_chunking": True}
    late = httpx.post(f"{url}/v1/embeddings", json=chunks, timeout=600)
    assert late.status_code == 200 and len(late.json()["data"]) == 3, late.text


@pytest.mark.parametrize("dockerfile, arch", [("Dockerfile", "amd64"), ("Dockerfile.arm64", "arm64")])
def test_images_build_on_their_own_base_where_it_can_be_pulled(
    dockerfile: str, arch: str, podman_ready: None, build_context: Path, request: pytest.FixtureRequest
) -> None:
    """The tests above build on a local bookworm root because no registry is reachable here; where python:3.11-slim
    can be pulled, each Dockerfile is built on its own base and served from too."""
    lines = (ROOT / dockerfile).read_text().splitlines()
    base = next(line.split("=", 1)[1] for line in lines if line.startswith("ARG BASE_IMAGE="))
    pull = images.podman("pull", "--arch", arch, images.qualified(base), check=False, timeout=900)
    if pull.returncode != 0:
        pytest.skip(
            f"{dockerfile} not built on its own base: podman pull {images.qualified(base)}: {images.error_line(pull)}"
        )
    args: list[str] = []
    extra: list[str] = ["TORCH_INDEX=https://pypi.org/simple"]
    if arch == "arm64":
        images.ensure_aarch64_emulation()
        args = ["-v", f"{request.getfixturevalue('int8_models')}:/models:ro", *images.EMULATION_RUN_ARGS]
        extra = []
    tag = f"localhost/embedserve:test-{arch}-official-base"
    images.build(dockerfile, tag, arch, images.qualified(base), build_context, *extra)
    with images.container(f"embedserve-test-{arch}-official-base", tag, *args) as running:
        running.wait_ready(timeout=900)
        assert _healthcheck(running) == 0, running.logs()
        assert images.stop(running)[0] == 0, running.logs()
