"""JupyterLab serves the notebook suite: started once on loopback with a token, queried through the Jupyter
server REST API (contents, kernel specs, kernels, the /lab page and its page config), stopped by its pid; and a
server of its own stopped through the shutdown API. HTTP with the standard library only; the kernel's channels
through websocket-client (a jupyter_server dependency), where installed."""

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
SUITE = ["01_data_exploration.ipynb", "02_train.ipynb", "03_evaluation.ipynb", "04_bias_analysis.ipynb",
         "05_explore.ipynb"]
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))  # every notebook there, the suite and any new one


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect comes back as its own response (HTTPError 30x), not followed


class Lab:
    """A JupyterLab server process on 127.0.0.1 and its token; ``request`` returns (status, headers, body)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.runtime = folder / "runtime"
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = folder / "lab.log"
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(self.runtime), "JUPYTER_CONFIG_DIR": str(folder / "config"),
               "JUPYTERLAB_WORKSPACES_DIR": str(folder / "workspaces"), "IPYTHONDIR": str(folder / "ipython")}
        with self.log.open("wb") as log:  # a file, not a pipe nobody reads (the server logs every request)
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                 "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                 f"--ServerApp.root_dir={ROOT}", "--ServerApp.open_browser=False", "--allow-root"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self._opener = urllib.request.build_opener(_NoRedirect)
        deadline = time.time() + 90
        while True:
            try:
                self.request("/api/status")
                return
            except OSError:
                if self.process.poll() is not None or time.time() > deadline:
                    self.stop()
                    pytest.fail(f"JupyterLab did not start:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.25)

    def request(self, path: str, method: str = "GET", body=None, token: str | None = "ours"):
        headers = {} if token is None else {"Authorization": f"token {self.token if token == 'ours' else token}"}
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as err:  # 3xx (not followed) and 4xx/5xx: a response too
            return err.code, err.headers, err.read()

    def json(self, path: str, method: str = "GET", body=None, expect: int = 200):
        status, _, data = self.request(path, method, body)
        assert status == expect, (path, status, data[:500])
        return json.loads(data) if data else None

    def stop(self) -> None:
        """Stop the server by its pid: SIGTERM (it shuts its kernels down), SIGKILL if it hangs."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
                raise


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    server = Lab(tmp_path_factory.mktemp("lab"))
    yield server
    try:
        if server.process.poll() is None:
            for kernel in server.json("/api/kernels"):  # a test that failed half-way may have left one
                server.request(f"/api/kernels/{kernel['id']}", "DELETE")
    finally:
        server.stop()
    assert server.process.returncode is not None


def start_kernel(lab: Lab) -> dict:
    status, headers, body = lab.request("/api/kernels", "POST", {"name": "python3"})
    assert status == 201, body[:500]
    kernel = json.loads(body)
    assert headers["Location"] == f"/api/kernels/{kernel['id']}" and kernel["name"] == "python3"
    return kernel


def execute(lab: Lab, kernel_id: str, code: str, timeout: float = 90) -> tuple[dict, str]:
    """Run ``code`` in the kernel over its websocket channels: (execute_reply content, stdout)."""
    websocket = pytest.importorskip("websocket")  # websocket-client
    ws = websocket.create_connection(f"ws://127.0.0.1:{lab.port}/api/kernels/{kernel_id}/channels?token={lab.token}",
                                     timeout=timeout)
    try:
        msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": session, "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        reply, stdout, idle, deadline = None, [], False, time.time() + timeout
        while reply is None or not idle:  # the shell reply and the iopub "idle" of this request, in any order
            assert time.time() < deadline, "no execute_reply from the kernel"
            message = json.loads(ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "execute_reply":
                reply = message["content"]
            elif message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
                stdout.append(message["content"]["text"])
            elif message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                idle = True
        return reply, "".join(stdout)
    finally:
        ws.close()


# ------------------------------------------------------------------------------------------ the server


def test_server_listens_on_loopback_and_wants_the_token(lab):
    (info_file,) = lab.runtime.glob("jpserver-*.json")  # the server's own record of where it runs
    info = json.loads(info_file.read_text())
    assert info["pid"] == lab.process.pid and info["hostname"] == "127.0.0.1" and info["port"] == lab.port
    assert info["root_dir"] == str(ROOT) and info["token"] == lab.token and info["base_url"] == "/"
    status = lab.json("/api/status")
    assert {"started", "last_activity", "kernels", "connections"} <= set(status)
    assert lab.request("/api/contents", token=None)[0] == 403
    assert lab.request("/api/contents", token="not-" + lab.token)[0] == 403
    code, headers, _ = lab.request("/lab", token=None)
    assert code == 302 and headers["Location"].startswith("/login?next=")  # the page asks for the token


# ------------------------------------------------------------------------------------------ contents


def test_contents_lists_every_notebook_as_a_notebook(lab):
    assert set(SUITE) <= set(NOTEBOOKS)
    top = lab.json("/api/contents")
    assert {"name": "notebooks", "type": "directory"}.items() <= next(
        item for item in top["content"] if item["name"] == "notebooks").items()
    listing = lab.json("/api/contents/notebooks")
    assert listing["type"] == "directory" and listing["path"] == "notebooks"
    items = {item["name"]: item for item in listing["content"] if item["name"].endswith(".ipynb")}
    assert sorted(items) == NOTEBOOKS
    for name, item in items.items():
        assert item["type"] == "notebook" and item["path"] == f"notebooks/{name}" and item["content"] is None
        assert item["size"] == (NOTEBOOK_DIR / name).stat().st_size and item["writable"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_notebook_round_trips_through_the_contents_api(lab, name):
    on_disk = json.loads((NOTEBOOK_DIR / name).read_text(encoding="utf-8"))
    model = lab.json(f"/api/contents/notebooks/{name}?content=1&type=notebook")
    assert model["type"] == "notebook" and model["format"] == "json" and model["name"] == name
    notebook = model["content"]
    assert (notebook["nbformat"], notebook["nbformat_minor"]) == (on_disk["nbformat"], on_disk["nbformat_minor"])
    assert len(notebook["cells"]) == len(on_disk["cells"]) > 0
    joined = lambda source: "".join(source) if isinstance(source, list) else source  # noqa: E731
    assert [(c["cell_type"], joined(c["source"])) for c in notebook["cells"]] == \
        [(c["cell_type"], joined(c["source"])) for c in on_disk["cells"]]
    assert notebook["metadata"].get("kernelspec") == on_disk["metadata"].get("kernelspec")
    raw = lab.json(f"/api/contents/notebooks/{name}?content=1&type=file&format=text")
    assert raw["format"] == "text" and json.loads(raw["content"]) == on_disk  # the file as it is, byte for byte JSON


def test_contents_answers_404_for_a_missing_notebook(lab):
    assert lab.request("/api/contents/notebooks/no-such-notebook.ipynb")[0] == 404


# ------------------------------------------------------------------------------------------ kernels


def test_the_python3_kernelspec_exists_and_every_notebook_names_it(lab):
    specs = lab.json("/api/kernelspecs")
    assert specs["default"] == "python3" and "python3" in specs["kernelspecs"]
    spec = specs["kernelspecs"]["python3"]["spec"]
    assert spec["language"] == "python" and "ipykernel_launcher" in " ".join(spec["argv"])
    for name in NOTEBOOKS:  # so opening one starts its kernel without asking which
        kernelspec = json.loads((NOTEBOOK_DIR / name).read_text(encoding="utf-8"))["metadata"]["kernelspec"]
        assert kernelspec["name"] in specs["kernelspecs"], name
    status, headers, logo = lab.request("/kernelspecs/python3/logo-64x64.png")
    assert status == 200 and logo.startswith(b"\x89PNG")


def test_a_kernel_starts_and_is_deleted_through_the_api(lab):
    kernel = start_kernel(lab)
    kid = kernel["id"]
    try:
        assert kid in [k["id"] for k in lab.json("/api/kernels")]
        assert lab.json(f"/api/kernels/{kid}")["name"] == "python3"
        assert (lab.runtime / f"kernel-{kid}.json").is_file()  # its connection file
        assert lab.json("/api/status")["kernels"] >= 1
    finally:
        status, _, _ = lab.request(f"/api/kernels/{kid}", "DELETE")
    assert status == 204
    assert lab.request(f"/api/kernels/{kid}")[0] == 404
    assert kid not in [k["id"] for k in lab.json("/api/kernels")]
    assert not (lab.runtime / f"kernel-{kid}.json").exists()
    assert lab.request(f"/api/kernels/{kid}", "DELETE")[0] == 404


def test_a_kernel_runs_code_in_the_project_environment(lab):
    kernel = start_kernel(lab)
    try:
        reply, stdout = execute(lab, kernel["id"], "import sys, hybridlib\nprint(sys.executable)\n"
                                                   "print(hybridlib.__file__)\nprint(6 * 7)")
        assert reply["status"] == "ok", reply
        executable, package, answer = stdout.split()
        assert Path(executable) == Path(sys.executable)  # the server's Python, i.e. this environment's
        assert Path(package).resolve().is_relative_to(ROOT / "hybridlib") and answer == "42"
        failed, _ = execute(lab, kernel["id"], "1 / 0")
        assert failed["status"] == "error" and failed["ename"] == "ZeroDivisionError"
    finally:
        assert lab.request(f"/api/kernels/{kernel['id']}", "DELETE")[0] == 204


# ------------------------------------------------------------------------------------------ the page


def page_config(page: bytes) -> dict:
    found = re.search(rb'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page, re.S)
    assert found, page[:2000]
    return json.loads(found.group(1))


def test_lab_serves_the_jupyterlab_page_with_its_config(lab):
    status, headers, page = lab.request("/lab")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<title>JupyterLab</title>" in page
    config = page_config(page)
    assert config["appName"] == "JupyterLab" and config["appVersion"] == version("jupyterlab")
    assert config["baseUrl"] == "/" and config["appUrl"] == "/lab" and config["token"] == lab.token
    assert config["serverRoot"] == str(ROOT) and config["treePath"] == ""
    (bundle,) = re.findall(rb'src="(/static/lab/main\.[0-9a-f]+\.js)', page)  # the built application
    status, headers, script = lab.request(bundle.decode())
    assert status == 200 and "javascript" in headers["Content-Type"] and len(script) > 1000


def test_lab_opens_a_notebook_by_its_url(lab):
    status, _, page = lab.request("/lab/tree/notebooks/03_evaluation.ipynb")
    assert status == 200 and page_config(page)["treePath"] == "notebooks/03_evaluation.ipynb"


# ------------------------------------------------------------------------------------------ shutdown


def test_the_shutdown_api_stops_a_server_and_its_kernels(tmp_path):
    server = Lab(tmp_path)  # a server of its own: the module's one stays up for the other tests
    try:
        kid = start_kernel(server)["id"]
        assert (server.runtime / f"kernel-{kid}.json").is_file()
        status, _, _ = server.request("/api/shutdown", "POST")
        assert status == 200
        assert server.process.wait(timeout=30) == 0  # exits cleanly
        with pytest.raises(OSError):
            server.request("/api/status")
        assert not list(server.runtime.glob("kernel-*.json"))  # its kernel was shut down with it
        assert not list(server.runtime.glob("jpserver-*"))  # and it removed its server record
    finally:
        server.stop()
