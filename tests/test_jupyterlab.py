"""JupyterLab serves the notebook suite: started on loopback, queried through its REST API, stopped."""

import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
NOTEBOOKS = ["01_data_exploration.ipynb", "02_train.ipynb", "03_evaluation.ipynb", "04_bias_analysis.ipynb",
             "05_explore.ipynb"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}", "--ServerApp.open_browser=False", "--allow-root"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**__import__("os").environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)},
    )
    base = f"http://127.0.0.1:{port}"

    def get(path, method="GET"):
        request = urllib.request.Request(base + path, method=method, headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()

    deadline = time.time() + 90
    while True:
        try:
            get("/api/status")
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"JupyterLab did not start:\n{process.stdout.read().decode()[-3000:]}")
            time.sleep(0.5)
    yield get, process
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def test_lab_lists_and_opens_every_notebook(lab):
    get, process = lab
    status, body = get("/api/contents/notebooks")
    listed = {item["name"] for item in json.loads(body)["content"] if item["type"] == "notebook"}
    assert set(NOTEBOOKS) <= listed
    for name in NOTEBOOKS:
        _, body = get(f"/api/contents/notebooks/{name}?content=1")
        model = json.loads(body)
        assert model["type"] == "notebook" and model["content"]["cells"]
    status, page = get("/lab")
    assert status == 200 and b"JupyterLab" in page
    kernelspecs = json.loads(get("/api/kernelspecs")[1])
    assert "python3" in kernelspecs["kernelspecs"]


def test_lab_stops_cleanly_through_its_api(lab):
    get, process = lab
    get("/api/shutdown", method="POST")
    assert process.wait(timeout=30) == 0
    with pytest.raises(OSError):
        get("/api/status")
