"""The deployment files, checked by parsing them (there is no Docker engine or systemd to run them here).

Each ``*_problems`` function lists what is wrong with a file's text; the tests run it on the real file
(no problems expected) and on deliberately broken variants (the problem must be found), so a check
that could never fail would show up as a failing variant test.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
UNIT = REPO / "deploy" / "product-id-bot.service"
ENV_EXAMPLE = REPO / "deploy" / "env.example"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


# ---- Dockerfile ---------------------------------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comments and blank lines dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") or (not line.strip() and not pending):
            continue
        pending += " " + line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return instructions


def substitute_args(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Replace ``${NAME}``/``$NAME`` with the ARG defaults, as a build without --build-arg would."""
    defaults = {}
    for keyword, args in instructions:
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name.strip()] = value.strip().strip('"')

    def expand(args: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults.get(m.group(1) or m.group(2), m.group(0)), args)

    return [(keyword, expand(args)) for keyword, args in instructions]


def command_words(args: str) -> list[str]:
    """CMD/ENTRYPOINT arguments in exec form (a JSON array) or shell form."""
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def pip_install_commands(run_args: str) -> list[list[str]]:
    """The words of each ``pip install`` in a RUN line (commands split at && and ;)."""
    lexer = shlex.shlex(run_args, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, words = [], []
    for token in [*lexer, "&&"]:
        if token in ("&&", ";", "||"):
            if "pip" in words and "install" in words:
                commands.append(words)
            words = []
        else:
            words.append(token)
    return commands


def env_values(instructions: list[tuple[str, str]]) -> dict[str, str]:
    values = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            for word in shlex.split(args):
                name, _, value = word.partition("=")
                values[name] = value
    return values


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[int, str, str]]]:
    """The build stages: from each FROM to the next, as (index, INSTRUCTION, arguments)."""
    out: list[list[tuple[int, str, str]]] = []
    for index, (keyword, args) in enumerate(instructions):
        if keyword == "FROM":
            out.append([])
        if out:
            out[-1].append((index, keyword, args))
    return out


def is_torch(word: str) -> bool:
    return bool(re.match(r"torch([=<>~!\[]|$)", word)) or word.startswith(".[train") or word.startswith(".[dev")


def dockerfile_problems(text: str) -> list[str]:
    """The runtime stage (the last) serves without torch; a stage that installs torch (the exporter) takes the CPU
    wheel before the project, so pip never fetches the CUDA build."""
    instructions = substitute_args(dockerfile_instructions(text))
    keywords = [k for k, _ in instructions]
    problems = []
    first = next((i for i, k in enumerate(keywords) if k != "ARG"), None)
    if first is None or keywords[first] != "FROM":
        problems.append("the first instruction (after ARGs) is not FROM")
    elif not instructions[first][1].startswith("python:3.11-slim"):
        problems.append(f"base image is {instructions[first][1]!r}, not python:3.11-slim")

    all_stages = stages(instructions) or [[]]
    runtime_start = all_stages[-1][0][0] if all_stages[-1] else 0
    runs = [(i, args) for i, (k, args) in enumerate(instructions) if k == "RUN"]
    for stage in all_stages:
        pip_installs = [(i, words) for i, k, args in stage if k == "RUN" for words in pip_install_commands(args)]
        torch_installs = [(i, " ".join(w)) for i, w in pip_installs if any(re.match(r"torch([=<>~!\[]|$)", x) for x in w)]
        project_installs = [(i, " ".join(w)) for i, w in pip_installs if "." in w or any(x.startswith(".[") for x in w)]
        for _, args in torch_installs:
            if f"--index-url {CPU_INDEX}" not in args:
                problems.append(f"torch is installed without the CPU-only index: {args[:80]}")
        torch_extra = [i for i, w in pip_installs if any(is_torch(x) and x.startswith(".[") for x in w)]
        if stage and stage[0][0] == runtime_start:
            if torch_installs or torch_extra:
                problems.append("the runtime stage installs torch: the served image must hold none")
            if not project_installs:
                problems.append("no RUN installs the project (pip install .)")
        elif torch_extra and (not torch_installs or min(torch_extra) < min(i for i, _ in torch_installs)):
            problems.append("the project is installed before the CPU torch: pip would fetch the CUDA build")
    instructions = instructions[runtime_start:]
    keywords = [k for k, _ in instructions]
    runs = [(i, args) for i, (k, args) in enumerate(instructions) if k == "RUN"]

    copied = {src.rstrip("/") for k, args in instructions if k == "COPY" for src in shlex.split(args)[:-1]}
    for needed in ("pyproject.toml", "bot", "model"):
        if needed not in copied and "." not in copied:
            problems.append(f"{needed} is not copied into the image")

    last_cmd = next((i for i in range(len(keywords) - 1, -1, -1) if keywords[i] == "CMD"), None)
    if last_cmd is None:
        problems.append("no CMD")
    else:
        if command_words(instructions[last_cmd][1]) != ["python", "-m", "bot"]:
            problems.append(f"CMD does not run python -m bot: {instructions[last_cmd][1]}")
        users = [args for k, args in instructions[:last_cmd] if k == "USER"]
        if not users:
            problems.append("no USER before CMD: the bot would run as root")
        elif users[-1].split(":")[0] in ("root", "0"):
            problems.append(f"USER {users[-1]} is root")
        elif not any(re.search(rf"(useradd|adduser)\b.*\b{re.escape(users[-1].split(':')[0])}\b", a) for _, a in runs):
            problems.append(f"USER {users[-1]} is never created (useradd/adduser)")

    healthchecks = [args for k, args in instructions if k == "HEALTHCHECK"]
    port = env_values(instructions).get("METRICS_PORT", "")
    if not healthchecks:
        problems.append("no HEALTHCHECK: a wedged bot would look healthy")
    elif not port or f"http://127.0.0.1:{port}/livez" not in healthchecks[-1]:
        problems.append(f"the HEALTHCHECK does not ask /livez on ENV METRICS_PORT={port!r}: {healthchecks[-1][:80]}")
    volumes = [v for k, args in instructions if k == "VOLUME" for v in command_words(args)]
    checkpoint = env_values(instructions).get("CHECKPOINT_PATH", "")
    if "/app/checkpoints" not in volumes:
        problems.append("no VOLUME /app/checkpoints for the mounted checkpoint")
    if not any(checkpoint.startswith(v.rstrip("/") + "/") for v in volumes):
        problems.append(f"ENV CHECKPOINT_PATH={checkpoint!r} is not inside a VOLUME")
    return problems


# ---- .dockerignore ------------------------------------------------------------------------------
def ignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex over slash-separated paths (``*``, ``?``, ``**``)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def is_ignored(path: str, ignore_text: str) -> bool:
    """Docker's rule: the last matching pattern wins (``!`` re-includes); a matched folder takes its contents."""
    rules = []
    for line in ignore_text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, ignore_regex(line.lstrip("!").strip("/"))))
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


MUST_IGNORE = [".venv/bin/python", "checkpoints/model.pt", "images/sample/saree/saree1.jpeg", "data/photos.sqlite3",
               ".env", "bot/__pycache__/app.cpython-311.pyc"]


def dockerignore_problems(ignore_text: str, dockerfile_text: str) -> list[str]:
    problems = [f"{path} would be sent to the Docker build" for path in MUST_IGNORE if not is_ignored(path, ignore_text)]
    instructions = dockerfile_instructions(dockerfile_text)
    for keyword, args in instructions:
        if keyword == "COPY":
            for source in shlex.split(args)[:-1]:
                if not source.startswith("--") and is_ignored(source.rstrip("/"), ignore_text):
                    problems.append(f"COPY {source} is excluded by .dockerignore: the build would fail")
    return problems


# ---- systemd unit -------------------------------------------------------------------------------
def unit_sections(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values...]}}; systemd allows repeated keys, so every value is kept."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def env_file_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def unit_problems(text: str, env_text: str) -> list[str]:
    service = unit_sections(text).get("Service", {})
    last = {key: values[-1] for key, values in service.items()}
    problems = []
    if shlex.split(last.get("ExecReload", ""))[1:2] != ["-HUP"]:
        problems.append("no ExecReload that sends SIGHUP (the bot reloads its checkpoint on it)")
    if last.get("Restart") != "on-failure":
        problems.append(f"Restart={last.get('Restart')!r}, not on-failure")
    if not last.get("EnvironmentFile", "").lstrip("-").startswith("/"):
        problems.append("no EnvironmentFile with an absolute path")
    if last.get("User", "root") in ("root", "0"):
        problems.append(f"runs as User={last.get('User', '(unset: root)')}")
    workdir = last.get("WorkingDirectory", "")
    argv = shlex.split(last.get("ExecStart", ""))
    if len(argv) < 3 or not argv[0].endswith("/.venv/bin/python") or argv[1:3] != ["-m", "bot"]:
        problems.append(f"ExecStart does not run the venv's python -m bot: {argv}")
    elif not workdir or not argv[0].startswith(workdir.rstrip("/") + "/"):
        problems.append(f"ExecStart's venv {argv[0]} is not under WorkingDirectory={workdir!r}")
    if "MemoryMax" not in last:
        problems.append("no MemoryMax")
    if last.get("NoNewPrivileges") != "yes":
        problems.append("NoNewPrivileges is not yes")
    if last.get("ProtectSystem") == "strict":
        writable = [p for values in service.get("ReadWritePaths", []) for p in values.split()]
        data_dir = env_file_values(env_text).get("DATA_DIR", "")
        if not any(data_dir == p or data_dir.startswith(p.rstrip("/") + "/") for p in writable):
            problems.append(f"DATA_DIR={data_dir!r} is read-only under ProtectSystem=strict (ReadWritePaths={writable})")
    if "WantedBy" not in unit_sections(text).get("Install", {}):
        problems.append("no [Install] WantedBy: systemctl enable would do nothing")
    return problems


# ---- the real files -----------------------------------------------------------------------------
def test_dockerfile_has_the_essentials():
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


def test_dockerignore_keeps_venv_secrets_checkpoints_and_photos_out_but_not_the_source():
    assert dockerignore_problems(DOCKERIGNORE.read_text(), DOCKERFILE.read_text()) == []
    for path in ("bot/app.py", "model/predict.py", "pyproject.toml", "README.md", ".env.example"):
        assert not is_ignored(path, DOCKERIGNORE.read_text()), path


def test_systemd_unit_has_the_essentials():
    assert unit_problems(UNIT.read_text(), ENV_EXAMPLE.read_text()) == []


def test_env_example_has_no_token_and_only_settings_the_bot_knows():
    values = env_file_values(ENV_EXAMPLE.read_text())
    assert values.get("TELEGRAM_BOT_TOKEN", None) == "", "the example must not carry a token"
    config = pytest.importorskip("bot.config", reason="the bot's settings are on another branch until merged")
    unknown = sorted(set(values) - set(config.ENV_NAMES.values()))
    assert unknown == [], f"settings the bot does not read: {unknown}"
    docker_env = env_values(dockerfile_instructions(DOCKERFILE.read_text()))
    assert {"CHECKPOINT_PATH", "DATA_DIR"} <= set(docker_env) <= set(config.ENV_NAMES.values()) | {
        "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK", "MPLCONFIGDIR",
        "MALLOC_ARENA_MAX"}


# ---- the checks catch broken files --------------------------------------------------------------
BROKEN_DOCKERFILES = {
    "root user": (r"^USER bot$", "USER root", "is root"),
    "no user": (r"^USER bot$", "", "no USER"),
    "CUDA torch": (r'--index-url "\$\{TORCH_INDEX_URL\}" ', "", "without the CPU-only index"),
    "wrong command": (r'^CMD .*$', 'CMD ["python", "-m", "model"]', "does not run python -m bot"),
    "no volume": (r"^VOLUME .*$", "", "VOLUME /app/checkpoints"),
    "other base": (r"^FROM python:3.11-slim AS exporter$", "FROM ubuntu:24.04", "not python:3.11-slim"),
    "bot not copied": (r"^COPY bot \./bot$", "", "bot is not copied"),
    "no healthcheck": (r"^HEALTHCHECK .*$", "", "no HEALTHCHECK"),
    "healthcheck elsewhere": (r"^ENV METRICS_PORT=9464$", "ENV METRICS_PORT=9100", "does not ask /livez"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_DOCKERFILES))
def test_dockerfile_check_finds(name):
    pattern, replacement, expected = BROKEN_DOCKERFILES[name]
    text, count = re.subn(pattern, replacement, DOCKERFILE.read_text(), flags=re.M)
    assert count == 1, f"the mutation {name!r} no longer applies to the Dockerfile"
    assert any(expected in problem for problem in dockerfile_problems(text)), dockerfile_problems(text)


def test_dockerfile_check_finds_project_installed_before_torch():
    text = DOCKERFILE.read_text()
    torch_line = next(line for line in text.splitlines() if line.startswith("RUN pip install --index-url"))
    moved = text.replace(torch_line + "\n", "").replace('RUN pip install ".[train]"', 'RUN pip install ".[train]"\n' + torch_line)
    assert moved.count(torch_line) == 1 and moved != text
    assert any("before the CPU torch" in p for p in dockerfile_problems(moved)), dockerfile_problems(moved)


def test_dockerfile_check_finds_torch_in_the_runtime_stage():
    text = DOCKERFILE.read_text()
    torch_line = next(line for line in text.splitlines() if line.startswith("RUN pip install --index-url"))
    for added in (torch_line, 'RUN pip install ".[train]"'):
        broken = text.replace("\nUSER bot", f"\n{added}\nUSER bot")
        assert any("runtime stage installs torch" in p for p in dockerfile_problems(broken)), dockerfile_problems(broken)


@pytest.mark.parametrize("line", [".venv", "checkpoints/*.pt", "images/sample", "data", ".env"])
def test_dockerignore_check_finds_a_missing_exclusion(line):
    text = DOCKERIGNORE.read_text()
    broken = re.sub(rf"^{re.escape(line)}$", "", text, flags=re.M)
    assert broken != text
    assert dockerignore_problems(broken, DOCKERFILE.read_text()) != []


def test_dockerignore_check_finds_copied_source_excluded():
    broken = DOCKERIGNORE.read_text() + "\nmodel\n"
    assert any("COPY model" in p for p in dockerignore_problems(broken, DOCKERFILE.read_text()))


BROKEN_UNITS = {
    "always restart": ("Restart=on-failure", "Restart=no", "not on-failure"),
    "root": ("User=productbot", "User=root", "runs as User=root"),
    "no env file": ("EnvironmentFile=/opt/product-id-bot/.env", "", "EnvironmentFile"),
    "system python": ("ExecStart=/opt/product-id-bot/.venv/bin/python -m bot", "ExecStart=/usr/bin/python3 -m bot",
                      "venv's python"),
    "data read-only": ("ReadWritePaths=/opt/product-id-bot/data", "ReadWritePaths=/var/lib/other", "read-only"),
    "no memory cap": ("MemoryMax=900M", "", "MemoryMax"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_UNITS))
def test_unit_check_finds(name):
    old, new, expected = BROKEN_UNITS[name]
    text = UNIT.read_text()
    assert old in text, f"the mutation {name!r} no longer applies to the unit"
    problems = unit_problems(text.replace(old, new), ENV_EXAMPLE.read_text())
    assert any(expected in problem for problem in problems), problems
