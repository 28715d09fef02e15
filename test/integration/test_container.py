"""The container image's contract, tested without a container engine.

This machine has no Docker engine, so the image is never built here. What the
tests check instead:

- deploy/lint is clean: hadolint on the Dockerfile, the Compose Specification
  schema on compose.yaml;
- the Dockerfile keeps its promises (read from the file itself): a bookworm
  build stage and a bookworm-slim runtime stage, a non-root USER, tini as
  PID 1 in the exec form of ENTRYPOINT, the config path in CMD, the
  HEALTHCHECK on /healthz at the EXPOSEd admin port, STOPSIGNAL SIGTERM, the
  version label equal to meson's project version, and a runtime package list
  that holds the Debian package of every shared library the binary needs;
- compose.yaml and deploy/config.compose.json fit together and with the
  Dockerfile (the mount target is CMD's config path, every ${NAME} the config
  uses is set, the admin port is published, the grace period outlasts the
  drain timeout, the image versions are the tested ones of deps/pom-*.xml),
  and `clickloop --check-config deploy/config.compose.json` passes;
- the ENTRYPOINT + CMD command line, run as it is (the binary path replaced by
  CLICKLOOP_BIN, the config path by a temporary file with the same content
  the compose config has, pointed at the test servers; as the image's user
  when the test runs as root): clickloop starts, the HEALTHCHECK URL answers
  200, it gets ready and stores events, SIGHUP sent to tini reaches clickloop
  (it logs the reload), and SIGTERM sent to tini makes it drain and exit 0.

Needs the MariaDB and Kafka test servers (deps/services up) and tini
(deps/install). Waits poll with deadlines; nothing sleeps to synchronise.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

from harness import (DELETE, Database, Message, admin_client, create_topic, deep_merge,
                     delete_topic, produce, random_suffix, wait_until)

SOURCE_ROOT = Path(os.environ.get("CLICKLOOP_SOURCE_ROOT",
                                  Path(__file__).resolve().parents[2]))
DOCKERFILE = SOURCE_ROOT / "Dockerfile"
COMPOSE = SOURCE_ROOT / "compose.yaml"
COMPOSE_CONFIG = SOURCE_ROOT / "deploy" / "config.compose.json"
LINT = SOURCE_ROOT / "deploy" / "lint"

# The image's user (Dockerfile USER); the live run uses it when we are root.
IMAGE_UID = 10001
# How long clickloop may take for each step of the live run (the sanitizer
# build is slow, and a consumer group's first assignment takes a few seconds).
STEP_TIMEOUT = 60


# ---------------------------------------------------------------- reading the files

def dockerfile_stages(text):
    """The Dockerfile as a list of stages, each a list of (INSTRUCTION, args):
    continuation lines joined, comments and blank lines dropped (also inside a
    continued instruction, as Docker does)."""
    logical, current = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and current is None):
            continue
        continued = line.endswith("\\")
        if continued:
            line = line[:-1].rstrip()
        current = line if current is None else f"{current} {line}"
        if not continued:
            logical.append(current)
            current = None
    assert current is None, "the Dockerfile ends inside a continued instruction"
    stages = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        assert stages, f"{instruction} before the first FROM"
        stages[-1].append((instruction, args.strip()))
    return stages


def only(stage, instruction):
    found = [args for ins, args in stage if ins == instruction]
    assert len(found) == 1, f"expected one {instruction} in the runtime stage, found {found}"
    return found[0]


def exec_form(args, what):
    """A JSON-array argument (the exec form). The shell form would make
    /bin/sh PID 1, which does not pass signals on."""
    try:
        value = json.loads(args)
    except ValueError:
        value = None
    assert isinstance(value, list) and value and all(isinstance(v, str) for v in value), \
        f"{what} must be in exec form (a JSON array of strings), got {args!r}"
    return value


def apt_installed(stage):
    """Package names given to `apt-get install` in a stage's RUN instructions."""
    names = []
    for ins, args in stage:
        if ins != "RUN":
            continue
        for m in re.finditer(r"apt-get\s+install\s+(.*?)(?:&&|;|$)", args):
            names += [t for t in m.group(1).split() if not t.startswith("-")]
    return names


def project_version():
    text = (SOURCE_ROOT / "meson.build").read_text()
    m = re.search(r"project\([^)]*?version\s*:\s*'([^']+)'", text, re.S)
    assert m, "no version in meson.build's project()"
    return m.group(1)


def pom_property(pom, name):
    text = (SOURCE_ROOT / "deps" / pom).read_text()
    m = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", text)
    assert m, f"no <{name}> in deps/{pom}"
    return m.group(1).strip()


def duration_seconds(text):
    """A compose duration such as "45s", "1m30s" or "1m"."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def config_duration_seconds(text):
    """A clickloop duration ("30s", "200ms": one number, one unit)."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    assert m, f"not a clickloop duration: {text!r}"
    return int(m.group(1)) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


class Image:
    """What the runtime stage of the Dockerfile says."""

    def __init__(self):
        stages = dockerfile_stages(DOCKERFILE.read_text())
        assert len(stages) >= 2, "expected a multi-stage Dockerfile"
        self.build, self.runtime = stages[0], stages[-1]
        self.build_base = self.build[0][1].split()[0]
        self.runtime_base = self.runtime[0][1].split()[0]
        self.entrypoint = exec_form(only(self.runtime, "ENTRYPOINT"), "ENTRYPOINT")
        self.cmd = exec_form(only(self.runtime, "CMD"), "CMD")
        self.user = only(self.runtime, "USER")
        self.stopsignal = only(self.runtime, "STOPSIGNAL")
        self.expose = only(self.runtime, "EXPOSE").split()
        health = only(self.runtime, "HEALTHCHECK")
        options, sep, command = health.partition(" CMD ")
        assert sep, f"HEALTHCHECK without CMD: {health!r}"
        self.healthcheck = exec_form(command.strip(), "HEALTHCHECK CMD")
        urls = [a for a in self.healthcheck if a.startswith(("http://", "https://"))]
        assert len(urls) == 1, f"expected one URL in the HEALTHCHECK, got {self.healthcheck}"
        self.health_url = urllib.parse.urlsplit(urls[0])
        labels = " ".join(args for ins, args in self.runtime if ins == "LABEL")
        self.labels = dict(re.findall(r'([\w.-]+)="([^"]*)"', labels))
        self.packages = apt_installed(self.runtime)
        # The config file CMD names: the argument after --config.
        assert "--config" in self.cmd, f"CMD does not pass --config: {self.cmd}"
        self.config_path = self.cmd[self.cmd.index("--config") + 1]

    def command_line(self, binary, config_path):
        """ENTRYPOINT + CMD with the image's binary path and config path replaced."""
        image_binary = self.entrypoint[-1]
        out = []
        for arg in self.entrypoint + self.cmd:
            if arg == image_binary:
                out.append(str(binary))
            elif arg == self.config_path:
                out.append(str(config_path))
            else:
                out.append(arg)
        return out


@pytest.fixture(scope="module")
def image():
    return Image()


@pytest.fixture(scope="module")
def compose():
    from ruamel.yaml import YAML
    return YAML(typ="safe").load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_config():
    return json.loads(COMPOSE_CONFIG.read_text())


# ---------------------------------------------------------------- lint

def test_lint_is_clean():
    r = subprocess.run([str(LINT)], capture_output=True, text=True, timeout=900,
                       stdin=subprocess.DEVNULL)
    output = r.stdout + r.stderr
    if r.returncode == 2 and "pip install" in output:
        # deploy/lint exits 2 only when it cannot install the pinned linters
        # (no registry reachable); there is nothing to lint with then.
        pytest.skip(f"the linters cannot be installed here:\n{output}")
    assert r.returncode == 0, f"deploy/lint found problems (exit {r.returncode}):\n{output}"
    assert "[lint] clean" in output


# ---------------------------------------------------------------- the Dockerfile

def test_dockerfile_contract(image):
    assert image.build_base == "debian:bookworm"
    assert image.runtime_base == "debian:bookworm-slim"
    # tini as PID 1 forwards signals to clickloop; "--" ends tini's options.
    assert image.entrypoint[:2] == ["/usr/bin/tini", "--"], image.entrypoint
    assert image.entrypoint[-1] == "/usr/local/bin/clickloop", image.entrypoint
    assert image.cmd == ["--config", "/etc/clickloop/config.json"]
    assert "tini" in image.packages
    user = image.user.split(":")[0]
    assert user not in ("root", "0", ""), f"USER {image.user} is root"
    assert user == str(IMAGE_UID)
    assert image.stopsignal == "SIGTERM"
    assert image.health_url.path == "/healthz"
    assert image.health_url.hostname == "127.0.0.1"
    assert [str(image.health_url.port)] == image.expose
    health_tool = image.healthcheck[0]
    assert health_tool in image.packages, \
        f"the HEALTHCHECK runs {health_tool}, which the runtime stage does not install"
    assert image.labels.get("org.opencontainers.image.version") == project_version()


def test_meson_installs_where_the_entrypoint_looks(image):
    """`meson install --destdir /out` with prefix /usr/local puts the binary
    where the runtime stage copies it from, and ENTRYPOINT runs it there."""
    runs = " ".join(args for ins, args in image.build if ins == "RUN")
    assert "--prefix=/usr/local" in runs and "meson install" in runs
    copies = [args for ins, args in image.runtime
              if ins == "COPY" and args.startswith("--from=build")]
    assert any(c.split()[1:] == ["/out" + image.entrypoint[-1], image.entrypoint[-1]]
               for c in copies), copies
    text = (SOURCE_ROOT / "meson.build").read_text()
    assert re.search(r"executable\('clickloop'.*?install\s*:\s*true", text, re.S)


def dpkg_package_of(path):
    """The Debian package owning a file, trying the path as given and as its
    /usr-merged twin (dpkg records whichever the package shipped)."""
    real = os.path.realpath(path)
    candidates = []
    for p in (path, real):
        candidates += [p, p[4:] if p.startswith("/usr/") else "/usr" + p]
    for p in candidates:
        r = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":")[0].strip()
    raise AssertionError(f"no Debian package owns {path}")


def test_runtime_stage_has_every_library(image, clickloop_bin):
    """Each shared library the binary links directly comes from a package that
    the runtime stage installs (or from libc6, which every Debian image has).
    The packages' own dependencies are apt's business."""
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        subprocess.run(["readelf", "-d", str(clickloop_bin)], check=True,
                                       capture_output=True, text=True).stdout)
    assert needed, "readelf found no NEEDED entries"
    resolved = dict(re.findall(r"^\s*(\S+) => (/\S+)",
                               subprocess.run(["ldd", str(clickloop_bin)], check=True,
                                              capture_output=True, text=True).stdout, re.M))
    missing = []
    for lib in needed:
        if lib.startswith(("libasan.", "libubsan.")):
            continue  # the sanitizer runtime of a sanitized test build, not in the image
        assert lib in resolved, f"ldd does not resolve {lib}"
        pkg = dpkg_package_of(resolved[lib])
        if pkg != "libc6" and pkg not in image.packages:
            missing.append(f"{lib} (package {pkg})")
    assert not missing, (f"the runtime stage does not install: {', '.join(missing)}; "
                         f"it installs {image.packages}")


# ---------------------------------------------------------------- compose.yaml

def test_compose_fits_the_image_and_the_config(image, compose, compose_config):
    services = compose["services"]
    for name in ("kafka", "mariadb", "elasticsearch", "clickloop"):
        assert name in services, f"compose.yaml has no service {name}"
    cl = services["clickloop"]
    assert cl["build"] in (".", {"context": "."}), cl["build"]

    mounts = [v for v in cl.get("volumes", []) if isinstance(v, str)]
    assert f"./deploy/config.compose.json:{image.config_path}:ro" in mounts, mounts

    # Every ${NAME} the config refers to is set for the container.
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", COMPOSE_CONFIG.read_text()))
    env = cl.get("environment", {})
    assert isinstance(env, dict)
    assert names <= set(env), f"not set in compose.yaml: {sorted(names - set(env))}"

    # The admin listener: on all interfaces (the port is published), at the
    # port the HEALTHCHECK asks, published.
    host, _, port = compose_config["admin"]["listen"].rpartition(":")
    assert host == "0.0.0.0"
    assert int(port) == image.health_url.port
    published = [str(p).rsplit(":", 1)[-1] for p in cl.get("ports", [])]
    assert port in published, cl.get("ports")

    # The servers the config names are compose services clickloop waits for
    # (Kafka through kafka-init, which waits for Kafka and creates the topic).
    def waits_for(service, target, seen=()):
        deps = services[service].get("depends_on", {})
        return target in deps or any(waits_for(d, target, seen + (service,))
                                     for d in deps if d not in seen)
    hosts = [b.rsplit(":", 1)[0] for b in compose_config["kafka"]["brokers"].split(",")]
    hosts.append(compose_config["mariadb"]["host"])
    hosts += [urllib.parse.urlsplit(u).hostname for u in compose_config["elasticsearch"]["urls"]]
    for h in hosts:
        assert h in services, f"the config names {h}, which is no compose service"
        assert waits_for("clickloop", h), f"clickloop does not wait for {h}"
    for topic in compose_config["kafka"]["topics"]:
        assert topic in services["kafka-init"]["command"], f"kafka-init does not create {topic}"

    # SIGTERM drains for up to shutdown.drain_timeout; Docker's SIGKILL must come later.
    drain = config_duration_seconds(compose_config.get("shutdown", {}).get("drain_timeout", "30s"))
    assert duration_seconds(cl["stop_grace_period"]) > drain

    # The images are the versions the tests run against (deps/pom-*.xml).
    assert services["kafka"]["image"] == f"apache/kafka:{pom_property('pom-kafka.xml', 'kafka.version')}"
    es_version = pom_property("pom-search.xml", "elasticsearch.version")
    assert services["elasticsearch"]["image"].endswith(f"/elasticsearch:{es_version}")


def test_check_config_of_the_compose_config(clickloop_bin):
    env = dict(os.environ, CLICKLOOP_DB_PASSWORD="not-the-real-one")
    r = subprocess.run([str(clickloop_bin), "--check-config", str(COMPOSE_CONFIG)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{COMPOSE_CONFIG}: valid"
    # Without the variable the reference is reported, naming it.
    env.pop("CLICKLOOP_DB_PASSWORD")
    r = subprocess.run([str(clickloop_bin), "--check-config", str(COMPOSE_CONFIG)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert ("mariadb.password: environment variable CLICKLOOP_DB_PASSWORD is not set"
            in r.stderr), r.stderr


def test_check_config_and_start_name_every_kafka_property_librdkafka_refuses(clickloop_bin,
                                                                             tmp_path):
    """Every refused librdkafka property is named by its JSON path, by --check-config and
    before a start (not only the first one, and not only once the consumer starts)."""
    config = json.loads(COMPOSE_CONFIG.read_text())
    config["mariadb"]["password"] = "x"
    config["kafka"]["properties"] = {"auto.offset.reset": 42,
                                     "session.timeout.ms": "not-a-number",
                                     "fetch.min.bytes": "1"}
    path = tmp_path / "bad-kafka.json"
    path.write_text(json.dumps(config))
    for args in (["--check-config", str(path)], ["--config", str(path)]):
        r = subprocess.run([str(clickloop_bin), *args], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert f'{path}: kafka.properties["auto.offset.reset"]: librdkafka refuses it' in r.stderr
        assert f'{path}: kafka.properties["session.timeout.ms"]: librdkafka refuses it' in r.stderr
        assert "fetch.min.bytes" not in r.stderr, r.stderr
        assert "valid" not in r.stdout
    # A property clickloop owns is refused by the loader with its reason.
    config["kafka"]["properties"] = {"enable.auto.commit": "false"}
    path.write_text(json.dumps(config))
    r = subprocess.run([str(clickloop_bin), "--check-config", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert 'kafka.properties["enable.auto.commit"]: set by clickloop' in r.stderr, r.stderr


def test_recompute_sql_names_every_configured_window_size(clickloop_bin, tmp_path):
    """--recompute-sql prints one statement for the configuration's window sizes (what it
    marks is checked against a database by test_aggregate's benchmark)."""
    config = json.loads(COMPOSE_CONFIG.read_text())
    config["mariadb"]["password"] = "x"
    config["aggregation"]["windows"] = ["15m", "1d", "7d"]
    path = tmp_path / "windows.json"
    path.write_text(json.dumps(config))
    r = subprocess.run([str(clickloop_bin), "--recompute-sql", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    sql = r.stdout.strip()
    assert sql.startswith("INSERT INTO agg_dirty") and sql.endswith(";"), sql
    assert sql.count(";") == 1
    for ms in (900000, 86400000, 604800000):
        assert str(ms) in sql, (ms, sql)
    path.write_text("{")
    r = subprocess.run([str(clickloop_bin), "--recompute-sql", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)


# ---------------------------------------------------------------- the entrypoint, live

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url):
    """(status, body) or None when nothing answers."""
    import requests
    try:
        r = requests.get(url, timeout=5)
    except requests.RequestException:
        return None
    return r.status_code, r.text


class Entrypoint:
    """The image's command line, run directly; stdout and stderr to files."""

    def __init__(self, argv, workdir, env):
        self.argv = argv
        self.stdout_path = workdir / "stdout.log"
        self.stderr_path = workdir / "stderr.log"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        kwargs = {}
        if os.geteuid() == 0:
            kwargs = dict(user=IMAGE_UID, group=IMAGE_UID, extra_groups=[])
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=env, start_new_session=True,
                                     **kwargs)

    def stderr(self):
        self._err.flush()
        return self.stderr_path.read_text(errors="replace")

    def tail(self, n=40):
        return "\n".join(self.stderr().splitlines()[-n:])

    def assert_running(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.argv} exited with {self.proc.returncode}; stderr ends "
                                 f"with:\n{self.tail()}")

    def children(self):
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: tini and clickloop
            self.proc.wait(timeout=30)
        self._out.close()
        self._err.close()


@pytest.fixture
def scratch(mariadb_params, kafka_bootstrap):
    """A database clickloop_ctr_<random> and a one-partition topic, removed after."""
    admin = admin_client(kafka_bootstrap)
    suffix = random_suffix(12)
    topic = f"clickloop-ctr-{suffix}"
    create_topic(admin, topic, partitions=1)
    db = None
    try:
        db = Database(mariadb_params, name=f"clickloop_ctr_{suffix}")
        yield {"topic": topic, "group": f"clickloop-ctr-{suffix}", "db": db,
               "bootstrap": kafka_bootstrap}
    finally:
        if db is not None:
            db.drop()
        delete_topic(admin, topic)


def test_entrypoint_runs_and_takes_signals_through_tini(image, clickloop_bin, compose_config,
                                                        scratch):
    tini = image.entrypoint[0]
    if not os.access(tini, os.X_OK):
        pytest.fail(f"{tini} is not installed: run deps/install (it installs Debian's tini, "
                    f"the same package and path as in the image)", pytrace=False)
    db = scratch["db"]
    admin_port = free_port()
    # The compose config, pointed at the test servers: ingest only (no
    # aggregation, nothing written to the shared search servers). The password
    # stays a ${CLICKLOOP_DB_PASSWORD} reference, set in the environment as
    # compose.yaml does.
    config = deep_merge(compose_config, {
        "kafka": {"brokers": scratch["bootstrap"], "group_id": scratch["group"],
                  "topics": [scratch["topic"]]},
        "mariadb": {"host": db.params["host"], "port": db.params["port"],
                    "user": db.params["user"], "database": db.name},
        "aggregation": {"enabled": False},
        "elasticsearch": DELETE,
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
    })
    assert config["mariadb"]["password"] == "${CLICKLOOP_DB_PASSWORD}"
    # A folder the image's user can read (pytest's tmp_path is private to root).
    workdir = Path(tempfile.mkdtemp(prefix="clickloop-ctr-"))
    os.chmod(workdir, 0o755)
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config, indent=2))
    os.chmod(config_path, 0o644)

    argv = image.command_line(clickloop_bin, config_path)
    assert argv[:2] == [tini, "--"] and argv[2] == str(clickloop_bin)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "CLICKLOOP_DB_PASSWORD": db.params["password"],
           # tini is PID 1 in the container; here it is not, and registers as
           # a child subreaper instead (same reaping, and no warning about it).
           "TINI_SUBREAPER": "1"}
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if var in os.environ:
            env[var] = os.environ[var]
    health = image.health_url._replace(netloc=f"127.0.0.1:{admin_port}").geturl()
    ready = image.health_url._replace(netloc=f"127.0.0.1:{admin_port}",
                                      path="/readyz").geturl()
    metrics = image.health_url._replace(netloc=f"127.0.0.1:{admin_port}",
                                        path="/metrics").geturl()

    ep = Entrypoint(argv, workdir, env)
    try:
        # tini starts clickloop as its child (the child runs tini's code until it execs).
        binary = os.stat(clickloop_bin)

        def clickloop_child():
            for pid in ep.children():
                try:
                    exe = os.stat(f"/proc/{pid}/exe")
                except OSError:
                    continue
                if (exe.st_dev, exe.st_ino) == (binary.st_dev, binary.st_ino):
                    return pid
            return None
        clickloop_pid = wait_until(clickloop_child, STEP_TIMEOUT, "tini to start clickloop",
                                   check=ep.assert_running, describe=ep.tail)

        # The HEALTHCHECK's URL answers 200 ...
        status = wait_until(lambda: http_get(health), STEP_TIMEOUT, f"GET {health}",
                            check=ep.assert_running, describe=ep.tail)
        assert status[0] == 200, status
        # ... and the service gets ready: schema migrated, MariaDB up, the
        # partition assigned.
        wait_until(lambda: (http_get(ready) or (0,))[0] == 200, STEP_TIMEOUT, f"GET {ready}",
                   check=ep.assert_running, describe=lambda: f"{http_get(ready)}\n{ep.tail()}")

        # It does its job.
        # Dated now: the compose config keeps the default event-time window.
        now_ms = int(time.time() * 1000)
        events = [Message(json.dumps({"event_id": f"ctr-{i}", "user_id": "u1",
                                      "timestamp": now_ms - i,
                                      "url": f"https://example.com/{i}"}).encode())
                  for i in range(20)]
        produce(scratch["bootstrap"], scratch["topic"], events)
        wait_until(lambda: db.count("click_data") == len(events), STEP_TIMEOUT,
                   f"{len(events)} rows in click_data", check=ep.assert_running,
                   describe=lambda: f"{db.count('click_data')} rows\n{ep.tail()}")

        # SIGHUP to tini reaches clickloop: one setting changed, reloaded.
        config["ingest"]["batch_max_delay"] = "250ms"
        config_path.write_text(json.dumps(config, indent=2))
        ep.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloaded" in ep.stderr(), STEP_TIMEOUT,
                   "clickloop to log the reload", check=ep.assert_running, describe=ep.tail)
        log = ep.stderr()
        assert f"reloaded {config_path}: 1 setting(s) changed" in log, log
        assert "ingest.batch_max_delay changed: applied" in log, log
        body = http_get(metrics)
        assert body and body[0] == 200
        assert re.search(r'^clickloop_config_reloads_total\{result="ok"\} 1(\.0)?$', body[1],
                         re.M), body[1]
        assert ep.proc.poll() is None and ep.children() == [clickloop_pid], \
            "SIGHUP ended tini or clickloop"

        # SIGTERM to tini: clickloop drains, commits and exits 0; tini exits
        # with its status. Deadline: the drain timeout plus time to close.
        drain = config_duration_seconds(config["shutdown"]["drain_timeout"])
        started = time.monotonic()
        ep.proc.send_signal(signal.SIGTERM)
        try:
            rc = ep.proc.wait(timeout=drain + STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within {drain + STEP_TIMEOUT:.0f}s of SIGTERM:\n"
                                 f"{ep.tail()}")
        log = ep.stderr()
        assert rc == 0, f"exit status {rc}:\n{ep.tail()}"
        assert "SIGTERM: draining" in log, log
        assert "exiting with status 0" in log, log
        # tini waited for its child before exiting with its status.
        assert not Path(f"/proc/{clickloop_pid}").exists(), "clickloop outlived tini"
        print(f"SIGTERM to exit: {time.monotonic() - started:.2f}s")
    finally:
        ep.close()
        shutil.rmtree(workdir, ignore_errors=True)
