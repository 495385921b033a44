"""Starts the real keyhaven server (the debug build) against the checking fake providers, and a headless
Chromium, for the browser tests. Screenshots go to .build/e2e/ (always for the named views, and on failure)."""
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(os.environ.get("KEYHAVEN_BIN_DIR", str(ROOT / ".build" / "debug")))
ARTIFACTS = ROOT / ".build" / "e2e"
CHROMIUM = os.environ.get("KEYHAVEN_CHROMIUM", "/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def workdir():
    path = pathlib.Path(tempfile.mkdtemp(prefix="keyhaven-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def fakes(workdir):
    info_path = workdir / "fakes.json"
    process = subprocess.Popen([str(BIN / "keyhaven-fakes"), str(info_path), "1500"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: info_path.exists(), 60, "the fake providers")
        info = json.loads(info_path.read_text())
        yield info
        # The fakes record every request they did not expect (a bad signature, a wrong header).
        with urllib.request.urlopen(info["base_url"] + "/_unexpected", timeout=5) as response:
            unexpected = json.load(response)["unexpected"]
        assert unexpected == [], f"the fake providers received requests they did not expect: {unexpected}"
    finally:
        process.terminate()
        process.wait(timeout=10)


class Server:
    def __init__(self, url, log_path, secrets, environment, workdir):
        self.url = url
        self.log_path = log_path
        self.secrets = secrets
        self.environment = environment
        self.workdir = workdir

    def create_user(self, email, password):
        """An account made by the operator's command, as a deployment with sign-up closed would make it (sign-up
        through the page is limited per address)."""
        subprocess.run([str(BIN / "keyhaven"), "users", "create", "--email", email], input=password + "\n", text=True,
                       env=self.environment, cwd=self.workdir, check=True, stdout=subprocess.DEVNULL, timeout=60)


@pytest.fixture(scope="session")
def server(workdir, fakes):
    port = free_port()
    log_path = workdir / "server.log"
    environment = dict(os.environ)
    environment.update(fakes["environment"])
    environment.update({
        "KEYHAVEN_HOST": "127.0.0.1",
        "KEYHAVEN_PORT": str(port),
        "KEYHAVEN_DATABASE_URL": f"sqlite://{workdir}/keyhaven.sqlite",
        "KEYHAVEN_KEYRING_FILE": str(workdir / "keyring.json"),
        "KEYHAVEN_EGRESS_ALLOW_PRIVATE": "true",
    })
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(BIN / "keyhaven"), "serve"], env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    url = f"http://127.0.0.1:{port}"

    def ready():
        if process.poll() is not None:
            raise RuntimeError("keyhaven serve exited:\n" + log_path.read_text()[-2000:])
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(ready, 120, "keyhaven serve")
    credentials = fakes["credentials"]
    # The secret parts (ids such as the access key id or the client id are shown as hints by design).
    pem = json.loads(credentials["google_cloud"])["private_key"]
    secrets = [credentials[name] for name in ("openai", "anthropic", "gemini", "aws_secret_access_key", "azure_client_secret")]
    secrets += [value for name, value in credentials.items() if name in ("mistral", "groq", "deepseek", "xai", "openrouter", "together", "fireworks", "perplexity")]
    secrets += [line for line in pem.splitlines() if len(line) > 20 and "PRIVATE KEY" not in line]
    yield Server(url, log_path, secrets, environment, workdir)
    process.terminate()
    process.wait(timeout=30)
    log = log_path.read_text(errors="replace")
    for secret in secrets:
        assert secret not in log, "a credential reached the server's log"


@pytest.fixture(scope="session")
def browser():
    arguments = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=arguments)
        yield browser
        browser.close()


class Recorder:
    """Every response the browser saw, to search for secrets."""

    def __init__(self, page):
        self.responses = []
        page.on("response", lambda response: self.responses.append(response))

    def bodies(self):
        for response in self.responses:
            try:
                yield response.url, response.text()
            except Exception:  # redirects and aborted requests have no body
                continue


def new_page(browser, server, language="es", viewport=DESKTOP):
    context = browser.new_context(
        base_url=server.url, viewport=viewport, locale="es-ES" if language == "es" else "en-US",
        extra_http_headers={"Accept-Language": "es-ES,es;q=0.9" if language == "es" else "en-US,en;q=0.9"},
    )
    page = context.new_page()
    page.set_default_timeout(15000)
    page.recorder = Recorder(page)
    return page


@pytest.fixture
def page(browser, server, request):
    page = new_page(browser, server)
    yield page
    if getattr(request.node, "failed", False):
        screenshot(page, f"failure-{request.node.name}")
    page.context.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.failed = True


def screenshot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    page.screenshot(path=str(ARTIFACTS / f"{safe}.png"), full_page=True)
