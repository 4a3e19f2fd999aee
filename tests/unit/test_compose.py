"""The docker-compose deployment of cluster mode, checked without a Docker engine.

``docker-compose.yml`` is read with PyYAML and held to what cluster mode needs
(node/cluster.py, node/runtime.py): five services (PostgreSQL, a plain Ray head,
Ray workers, the Ray node that runs ``paynode actors``, the API), each with a
healthcheck and started only once what it depends on is healthy, the actors
only once the workers are up, so that the shards spread over every node; every
``paynode ...`` command accepted by the project's own CLI parser; every
``PAYNODE_*`` variable a real setting; the same cluster-wide settings and
keyring for the actors and the API, the data directory on the actors node
only; secrets only as required variables. When the ``docker compose`` plugin is
installed, ``docker compose config`` (which needs no engine) checks the file
against the Compose specification too.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from paynode.domain.settings import Settings
from paynode.node.cli import _parser, _settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SERVICES = {"postgres", "ray-head", "ray-worker", "actors", "api"}
RAY_SERVICES = ("ray-head", "ray-worker", "actors", "api")
REQUIRED_SECRETS = {"POSTGRES_PASSWORD", "RAY_AUTH_TOKEN", "PAYNODE_API_KEY"}
# PAYNODE_* variables read outside Settings, and the file that reads each.
NOT_SETTINGS = {"PAYNODE_KEYRING_JSON": "storage/keyring.py"}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$|KEYRING_JSON|PROVIDERS")
# Shared by the actors and the HTTP front: one cluster, one database, one keyring.
CLUSTER_WIDE = ("DATABASE_URL", "RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                "PAYNODE_KEYRING", "PAYNODE_KEYRING_JSON", "PAYNODE_PUBLIC_URL")  # fmt: skip
DUMMIES = {name: f"dummy-{name.lower().replace('_', '-')}-0123456789" for name in REQUIRED_SECRETS}

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")


def expand(text: str, env: Mapping[str, str] | None = None) -> str:
    """Compose's interpolation, with ``env`` as the variables that are set (none by default):
    ``${VAR:-default}`` gives its default, ``${VAR:?message}`` is an error, ``$$`` is ``$``."""
    env = env or {}

    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        value = env.get(name)
        is_set = value is not None and (value != "" or not (op or "").startswith(":"))
        if op in (":+", "+"):
            return arg if is_set else ""
        if is_set:
            return value
        if op in (":?", "?"):
            raise KeyError(f"{name} is required: {arg}")
        return arg if op in (":-", "-") else ""

    return _VAR.sub(one, text.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def service(compose: dict, name: str) -> dict:
    return compose["services"][name]


def environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_lines(svc: dict) -> list[list[str]]:
    """Each simple command a service runs (``sh -c 'a && exec b'`` gives a and b), defaults
    interpolated."""
    cmd = svc.get("command")
    if cmd is None:
        return []
    argv = shlex.split(expand(cmd)) if isinstance(cmd, str) else [expand(str(a)) for a in cmd]
    if argv[0] not in ("sh", "/bin/sh", "bash", "/bin/bash") or argv[1] != "-c":
        return [argv]
    lines: list[list[str]] = [[]]
    for token in shlex.split(argv[2]):
        if token in ("&&", "||", ";"):
            lines.append([])
        else:
            lines[-1].append(token)
    return [line[1:] if line[0] == "exec" else line for line in lines if line]


def ray_flags(line: list[str]) -> dict[str, str]:
    return dict([*a[2:].split("=", 1), ""][:2] for a in line[2:] if a.startswith("--"))


def mounts(svc: dict) -> list[tuple[str | None, str, bool, str]]:
    """(source, target, read_only, type) of each of a service's volumes."""
    found = []
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            found.append((v.get("source"), v["target"], bool(v.get("read_only")), v["type"]))
            continue
        parts = v.split(":")
        if len(parts) == 1:
            found.append((None, parts[0], False, "volume"))
            continue
        kind = "bind" if parts[0].startswith(("/", ".", "~", "$")) else "volume"
        found.append((parts[0], parts[1], "ro" in parts[2:], kind))
    return found


def test_the_five_services_exist(compose: dict) -> None:
    assert set(compose["services"]) >= SERVICES


def test_every_service_has_a_healthcheck(compose: dict) -> None:
    for name, svc in compose["services"].items():
        check = svc.get("healthcheck") or {}
        test = check.get("test")
        assert test and not check.get("disable"), f"{name} has no healthcheck"
        if isinstance(test, list):
            assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: {test}"


def test_python_healthchecks_compile_and_import_what_exists(compose: dict) -> None:
    """A healthcheck that cannot run would keep its service unhealthy forever."""
    for name, svc in compose["services"].items():
        test = svc["healthcheck"]["test"]
        if test[:3] != ["CMD", "python", "-c"]:
            continue
        tree = ast.parse(test[3], filename=f"{name} healthcheck")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("paynode."):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{name}: {node.module}.{alias.name}"


def test_dependencies_wait_until_healthy(compose: dict) -> None:
    for name, svc in compose["services"].items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs the long form (a condition)"
        for dep, how in deps.items():
            assert dep in compose["services"], f"{name} depends on unknown {dep}"
            assert how.get("condition") == "service_healthy", f"{name} -> {dep}"
    # Nothing may talk to the head's Ray before it is up, nor to PostgreSQL before it is.
    for name, svc in compose["services"].items():
        joins = any(line[:2] == ["ray", "start"] and "--head" not in line
                    for line in command_lines(svc))  # fmt: skip
        assert not joins or "ray-head" in (svc.get("depends_on") or {}), f"{name} -> ray-head"
        if "DATABASE_URL" in environment(svc):
            assert "postgres" in (svc.get("depends_on") or {}), f"{name} -> postgres"
    # The head is plain Ray: it waits for nothing.
    assert not service(compose, "ray-head").get("depends_on")
    # SPREAD spreads only over the nodes alive when the shards are created: the actors wait for
    # the workers (which wait for the head), and the API for the actors' shards and helpers.
    assert {"postgres", "ray-worker", "ray-head"} <= set(service(compose, "actors")["depends_on"])
    assert {"postgres", "actors", "ray-head"} <= set(service(compose, "api")["depends_on"])
    # A new head is a new cluster, and new actors are new actor handles: whoever holds them
    # is restarted along with them.
    for name, dep in [("ray-worker", "ray-head"), ("actors", "ray-head"), ("api", "ray-head"),
                      ("api", "actors")]:  # fmt: skip
        assert service(compose, name)["depends_on"][dep].get("restart") is True, (name, dep)
    # No cycle: compose could start nothing.
    graph = {n: set(s.get("depends_on") or {}) for n, s in compose["services"].items()}
    done: set[str] = set()
    while len(done) < len(graph):
        ready = {n for n, deps in graph.items() if n not in done and deps <= done}
        assert ready, f"dependency cycle among {set(graph) - done}"
        done |= ready


def test_named_volumes_are_declared_and_used(compose: dict) -> None:
    declared = set(compose.get("volumes") or {})
    used = {
        src
        for svc in compose["services"].values()
        for src, _, _, kind in mounts(svc)
        if kind == "volume" and src is not None
    }
    assert used <= declared, f"volumes used but not declared: {used - declared}"
    assert declared <= used, f"volumes declared but never mounted: {declared - used}"


def test_paynode_commands_parse_with_the_cli(compose: dict) -> None:
    parser = _parser()
    choices = next(a.choices for a in parser._actions if getattr(a, "choices", None))
    assert {"actors", "api"} <= set(choices)
    ran = {}
    for name, svc in compose["services"].items():
        for line in command_lines(svc):
            if line[0] != "paynode":
                continue
            try:
                args = parser.parse_args(line[1:])
            except SystemExit:
                pytest.fail(f"{name}: the CLI refuses {shlex.join(line)}")
            # Spelled out: argparse would also take an abbreviation, which a new option can
            # make ambiguous.
            known = choices[args.command]._option_string_actions
            for token in line[2:]:
                option = token.split("=", 1)[0]
                assert not option.startswith("-") or option in known, f"{name}: {option}"
            ran[name] = args
    # `paynode actors` runs on a Ray node of its own, and nowhere else (the head is plain Ray).
    assert {n for n, args in ran.items() if args.command == "actors"} == {"actors"}
    assert ran["actors"].shards >= 1
    api = ran["api"]
    assert (api.command, api.host, api.port) == ("api", "0.0.0.0", 8000)
    assert 1 <= api.workers <= 64


def test_ray_nodes_join_the_head_they_drive(compose: dict) -> None:
    """The head runs Ray alone (--block keeps it up); the actors node joins before `paynode
    actors`, the API as a node with no CPU before `paynode api` (a driver needs a local node);
    every RAY_ADDRESS and health check is the head's port."""
    head = command_lines(service(compose, "ray-head"))
    assert len(head) == 1 and head[0][:3] == ["ray", "start", "--head"], head
    assert "block" in ray_flags(head[0]), "without --block the head container would exit"
    address = f"ray-head:{ray_flags(head[0])['port']}"
    for name in ("actors", "api"):
        assert environment(service(compose, name))["RAY_ADDRESS"] == address, name
    worker = command_lines(service(compose, "ray-worker"))
    assert worker[0][:2] == ["ray", "start"] and ray_flags(worker[0])["address"] == address
    assert "block" in ray_flags(worker[0]), "without --block the worker container would exit"
    actors = command_lines(service(compose, "actors"))
    assert actors[0][:2] == ["ray", "start"] and actors[-1][:2] == ["paynode", "actors"]
    assert ray_flags(actors[0])["address"] == address
    api = command_lines(service(compose, "api"))
    assert api[0][:2] == ["ray", "start"] and api[-1][:2] == ["paynode", "api"]
    assert ray_flags(api[0])["address"] == address and ray_flags(api[0])["num-cpus"] == "0"
    for name, lines in (("actors", actors), ("api", api)):
        assert "block" not in ray_flags(lines[0]), f"{name}: --block would never start paynode"
    # Ray-level health checks ask the head's GCS: the head itself on loopback, the others by name.
    port = address.split(":")[1]
    for name, host in (("ray-head", "127.0.0.1"), ("ray-worker", "ray-head")):
        check = service(compose, name)["healthcheck"]["test"]
        script = check[3] if check[:3] == ["CMD", "python", "-c"] else " ".join(check[1:])
        found = re.findall(r"--address[\"',=\s]+([\w.-]+:\d+)", script)
        assert found == [f"{host}:{port}"], (name, found)
        assert "raylet" in script, f"{name}: the check must see this node's raylet too"


def test_paynode_variables_are_settings(compose: dict) -> None:
    fields = set(Settings.__struct_fields__)
    for name, svc in compose["services"].items():
        for key in environment(svc):
            if not key.startswith("PAYNODE_"):
                continue
            if key in NOT_SETTINGS:
                assert key in (ROOT / NOT_SETTINGS[key]).read_text(), f"{key} is read nowhere"
            else:
                assert key.removeprefix("PAYNODE_").lower() in fields, f"{name}: unknown {key}"


def test_each_paynode_command_gets_valid_settings(
    compose: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings each `paynode` process would start with, from its service's environment and
    command line, pass the node's own checks (types, ranges, API key length)."""
    parser = _parser()
    for name, svc in compose["services"].items():
        for line in command_lines(svc):
            if line[0] != "paynode":
                continue
            for key in list(os.environ):
                if key.startswith("PAYNODE_") or key in ("DATABASE_URL", "RAY_ADDRESS"):
                    monkeypatch.delenv(key)
            for key, value in environment(svc).items():
                monkeypatch.setenv(key, expand(value, DUMMIES))
            settings = _settings(parser.parse_args(line[1:]))
            assert settings.ray_address and settings.database_url, name


def test_actors_and_api_share_the_cluster_and_the_keyring(compose: dict) -> None:
    actors, api = environment(service(compose, "actors")), environment(service(compose, "api"))
    for key in CLUSTER_WIDE:
        assert key in actors and actors.get(key) == api.get(key), f"{key} differs: actors vs API"
    for name in RAY_SERVICES:
        env = environment(service(compose, name))
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"] == actors["RAY_AUTH_TOKEN"], name
    # The keyring file lies on the same named volume in both containers: writable where
    # `paynode actors` creates it (and `paynode keys rotate` runs), read-only for the API.
    keyring_dir = str(Path(actors["PAYNODE_KEYRING"]).parent)
    keyring = {
        n: [(src, ro) for src, dst, ro, kind in mounts(service(compose, n)) if dst == keyring_dir]
        for n in ("actors", "api")
    }
    assert keyring["actors"] and keyring["api"], keyring
    [(actors_src, actors_ro)], [(api_src, api_ro)] = keyring["actors"], keyring["api"]
    assert actors_src == api_src and not actors_ro and api_ro, keyring
    # The helpers write under the data directory of the node where `paynode actors` runs: the
    # `data` volume is there, and only there (the head holds no data).
    data_dir = actors.get("PAYNODE_DATA_DIR") or next(
        m[1]
        for op, arg in dockerfile_instructions()
        if op == "ENV" and (m := re.search(r"\bPAYNODE_DATA_DIR=(\S+)", arg))
    )
    on_data = {
        n: src for n, svc in compose["services"].items() for src, dst, _, _ in mounts(svc)
        if dst == data_dir
    }  # fmt: skip
    assert list(on_data) == ["actors"] and on_data["actors"], f"{data_dir} is on {on_data}"
    assert not service(compose, "ray-head").get("volumes"), "the head holds no data"
    # The database is the postgres service's, as that service creates it.
    pg = environment(service(compose, "postgres"))
    url = urlsplit(expand(actors["DATABASE_URL"], DUMMIES))
    assert (url.hostname, url.username, url.path) == ("postgres", pg["POSTGRES_USER"],
                                                       "/" + pg["POSTGRES_DB"])  # fmt: skip
    assert url.password == DUMMIES["POSTGRES_PASSWORD"]
    # The bank simulator reaches the HTTP front where it listens.
    public = urlsplit(actors["PAYNODE_PUBLIC_URL"])
    api_args = _parser().parse_args(command_lines(service(compose, "api"))[-1][1:])
    assert (public.hostname, public.port) == ("api", api_args.port)


def test_secrets_are_required_variables(compose: dict) -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"(?<!\$)\$[A-Za-z_]", text.replace("$$", "")), (
        "a bare $VAR is substituted by compose from the host: write ${VAR} or $$VAR"
    )
    seen = set()
    for name, svc in compose["services"].items():
        for key, value in environment(svc).items():
            if key in REQUIRED_SECRETS:
                m = re.fullmatch(r"\$\{(\w+):\?([^}]+)\}", value)
                assert m and m[1] == key, f"{name}: {key} must be ${{{key}:?message}}"
                seen.add(key)
            elif SECRET_NAME.search(key):
                m = _VAR.fullmatch(value)
                optional = m and m["op"] == ":-" and not m["arg"]
                required = m and m["op"] == ":?"
                assert optional or required, f"{name}: {key} holds a literal secret"
            if key == "DATABASE_URL":
                # Raw text: the '?' of the variable would end a URL's authority part.
                pattern = r"postgresql://\w+:\$\{POSTGRES_PASSWORD:\?[^}]+\}@[^@]+"
                assert re.fullmatch(pattern, value), f"{name}: DATABASE_URL {value}"
    assert seen == REQUIRED_SECRETS
    for needs, names in {"PAYNODE_API_KEY": ["api"], "RAY_AUTH_TOKEN": RAY_SERVICES}.items():
        for n in names:
            assert needs in environment(service(compose, n)), f"{n} lacks {needs}"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_builds_a_small_non_root_image(compose: dict) -> None:
    assert DOCKERFILE.is_file()
    steps = dockerfile_instructions()
    base = next(arg for op, arg in steps if op == "FROM")
    assert base.startswith("python:3.11"), base
    users = [arg for op, arg in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    installs = " ".join(arg for op, arg in steps if op == "RUN" and "pip install" in arg)
    assert "pip install" in installs and "[test]" not in installs
    assert ("WORKDIR", "/app") in steps
    # Volumes are compose's to mount where needed: a VOLUME would give every container one.
    assert not [arg for op, arg in steps if op == "VOLUME"], "VOLUME in the Dockerfile"
    assert any(op == "ENV" and "PAYNODE_DATA_DIR=/data" in arg for op, arg in steps)
    # Every package the wheel holds is copied into the build, and none is ignored.
    mapped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(mapped["package-dir"].values())  # the folders the wheel is built from
    copied = {arg.split()[0] for op, arg in steps if op == "COPY"}
    assert packages <= copied, f"not copied into the image: {packages - copied}"
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert not (copied & ignored), copied & ignored
    assert {".env", ".git", ".venv", "paynode-data"} <= ignored
    for name in RAY_SERVICES:
        assert service(compose, name)["build"] == ".", name


def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    version = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60)
    return [docker, "compose"] if version.returncode == 0 else None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip(
            "no `docker compose` here (docker CLI or its compose plugin missing): the file was "
            "checked by the other tests only (the schema test uses the 2021 specification)"
        )
    empty = tmp_path / "empty.env"  # not the developer's .env: only what we pass below
    empty.write_text("")
    names = {m["name"] for m in _VAR.finditer(COMPOSE.read_text())}
    env = {k: v for k, v in os.environ.items() if k not in names}
    args = [*cli, "--project-directory", str(ROOT), "--env-file", str(empty), "-f", str(COMPOSE)]
    ok = subprocess.run([*args, "config", "-q"], env=env | DUMMIES, capture_output=True,
                        text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    for secret in sorted(REQUIRED_SECRETS):
        without = {k: v for k, v in DUMMIES.items() if k != secret}
        refused = subprocess.run([*args, "config", "-q"], env=env | without,
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
        assert refused.returncode != 0 and secret in refused.stderr, (secret, refused.stderr)


def test_the_file_matches_the_compose_specification_schema(compose: dict) -> None:
    """The Compose Specification's JSON schema (``tests/unit/data/compose_spec.json``, as shipped
    in docker-compose 1.29.2, Apache-2.0): unknown keys, wrong types and bad values fail
    here without Docker. One later addition to the specification is allowed on top:
    ``depends_on.<service>.restart`` (Compose 2.17, 2023)."""
    import json

    import jsonschema

    schema = json.loads((ROOT / "tests" / "unit" / "data" / "compose_spec.json").read_text())
    long_form = schema["definitions"]["service"]["properties"]["depends_on"]["oneOf"][1]
    for entry in long_form["patternProperties"].values():
        entry["properties"]["restart"] = {"type": "boolean"}
    errors = [
        f"{'.'.join(map(str, e.path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(compose)
    ]
    assert not errors, errors
