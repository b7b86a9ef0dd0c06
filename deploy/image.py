"""What servegate's image needs of the Dockerfile and .dockerignore, checked without a Docker engine:
a builder and a slim runtime stage, a numeric non-root user, the health check on the readiness path,
the gateway's ports, exec-form entry point, SIGTERM, declared writable volumes and no baked secrets.

    python -m deploy.image [CONTEXT]
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from deploy.manifests import GATEWAY_PORTS, READY_PATH, is_literal_secret

Instruction = tuple[str, str]  # upper-cased keyword, the rest of the (joined) line


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """Instructions per stage; index 0 holds what comes before the first FROM (global ARGs)."""
    stages: list[list[Instruction]] = [[]]
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def arg_defaults(instructions: list[Instruction], into: dict[str, str]) -> dict[str, str]:
    for keyword, rest in instructions:
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            into[name] = default.strip('"')
    return into


def substitute(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], m[0]), text)


def exec_form(rest: str | None) -> list[str] | None:
    try:
        value = json.loads(rest or "")
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def final_user(stages: list[list[Instruction]]) -> str | None:
    variables = arg_defaults(stages[-1], arg_defaults(stages[0], {}))
    users = [substitute(rest, variables) for keyword, rest in stages[-1] if keyword == "USER"]
    return users[-1] if users else None


def dockerignore_patterns(context: Path) -> list[str]:
    lines = (context / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` (relative to the context) out: the last matching pattern wins,
    and a pattern that matches a folder matches everything in it."""
    excluded, parts = False, path.split("/")
    for pattern in patterns:
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not pattern.startswith("!")
    return excluded


def _glob_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])), i + 1
    return out


def dockerfile_problems(text: str, context: Path) -> list[str]:
    """Everything wrong with a Dockerfile whose build context is `context` (empty when it is right)."""
    stages = dockerfile_stages(text)
    if len(stages) < 3:
        return ["the Dockerfile must be multi-stage (a builder and a runtime)"]
    builder, final, global_args = stages[1], stages[-1], arg_defaults(stages[0], {})
    out = []
    bases = [substitute(stage[0][1], global_args).split()[0] for stage in stages[1:]]
    if not all(re.fullmatch(r"python:3\.1[1-9][\w.-]*-slim(@sha256:\w+)?", b) for b in bases):
        out.append(f"every stage must start from python:3.11-slim or newer, not {bases}")
    if not re.search(r"venv.*pip|pip.*venv", " ".join(rest for k, rest in builder if k == "RUN")):
        out.append("the builder must pip-install into a virtual environment")
    earlier = {stage[0][1].split()[-1] for stage in stages[1:-1] if " AS " in stage[0][1].upper()}
    sources = {m[1] for k, rest in final if k == "COPY" and (m := re.search(r"--from=(\S+)", rest))}
    if not sources & earlier:
        out.append("the runtime stage must copy the environment from the builder")
    if any(k == "RUN" and re.search(r"build-essential|gcc|g\+\+", rest) for k, rest in final):
        out.append("compilers belong to the builder stage only")
    user = final_user(stages)
    if user is None or not re.fullmatch(r"\d+(:\d+)?", user) or int(user.split(":")[0]) == 0:
        out.append(f"the runtime must run as a numeric non-root USER, not {user or 'root'}")
    exposed = {port.split("/")[0] for k, rest in final if k == "EXPOSE" for port in rest.split()}
    if not {str(p) for p in GATEWAY_PORTS.values()} <= exposed:
        out.append(f"EXPOSE must list {sorted(GATEWAY_PORTS.values())}")
    last = {k: rest for k, rest in final}
    if exec_form(last.get("ENTRYPOINT")) != ["servegate"]:
        out.append('ENTRYPOINT must be ["servegate"] (exec form, so the gateway receives SIGTERM)')
    if exec_form(last.get("CMD")) != ["serve", "--repository", "/models", "--host", "0.0.0.0"]:
        out.append("CMD must serve /models on 0.0.0.0")
    if last.get("STOPSIGNAL") != "SIGTERM":
        out.append("STOPSIGNAL must be SIGTERM (the gateway drains on it)")
    return out + healthcheck_problems(final, context) + secret_and_file_problems(stages, context)


def healthcheck_problems(final: list[Instruction], context: Path) -> list[str]:
    """The HEALTHCHECK asks the readiness path, inline or through a script copied from the repository."""
    checks = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    command = (checks or [""])[-1].partition("CMD ")[2]
    if READY_PATH in command:
        return []
    copies = [shlex.split(rest) for k, rest in final if k == "COPY" and "--from" not in rest]
    copied = {words[-1]: words[-2] for words in copies}
    scripts = [context / copied[word] for word in re.findall(r"[\w./-]+", command) if word in copied]
    if scripts and READY_PATH in scripts[0].read_text():
        return []
    return [f"a HEALTHCHECK CMD must probe {READY_PATH}"]


def secret_and_file_problems(stages: list[list[Instruction]], context: Path) -> list[str]:
    out, env, patterns = [], {}, dockerignore_patterns(context)
    for keyword, rest in (instruction for stage in stages for instruction in stage):
        if keyword in ("ENV", "ARG"):
            pairs = dict(word.partition("=")[::2] for word in shlex.split(rest))
            env.update(pairs)
            out += [f"{keyword} {k} bakes a secret into the image"
                    for k, v in pairs.items() if is_literal_secret(k, v)]
        elif keyword == "COPY" and "--from" not in rest:
            for src in shlex.split(rest)[:-1]:
                if re.search(r"(^|/)(\.env|id_rsa)|\.(pem|key)$", src):
                    out.append(f"COPY {src} puts key material into the image")
                if not (context / src).exists() or dockerignore_excludes(patterns, src):
                    out.append(f"COPY source {src} is missing or left out by .dockerignore")
    volumes = {v for keyword, rest in stages[-1] if keyword == "VOLUME" for v in exec_form(rest) or rest.split()}
    if not {"/var/lib/servegate", "/tmp"} <= volumes:
        out.append("VOLUME must declare /var/lib/servegate and /tmp (the only writable paths)")
    store = urlsplit(env.get("SERVEGATE_STORE", "")).path
    if not any(store.startswith(v.rstrip("/") + "/") for v in volumes):
        out.append(f"the default store {store or '(none)'} must live on a declared volume")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    context = Path((list(argv) if argv is not None else sys.argv[1:] or ["."])[0])
    found = dockerfile_problems((context / "Dockerfile").read_text(), context)
    print("".join(f"{p}\n" for p in found) or "ok\n", end="")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
