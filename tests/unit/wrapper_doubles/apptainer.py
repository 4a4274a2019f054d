"""Stand-in for ``apptainer`` in the job wrapper's unit tests (orchestration only).

It is NOT a container runtime: ``apptainer exec|run [options] IMAGE argv...`` records its
command line, then execs argv on the host with the container environment built from the
``APPTAINERENV_`` variables, the way Apptainer builds it. It copies the Apptainer behaviours
the wrapper must cope with: a missing image or command is a ``FATAL:`` line and exit 255,
one ``\\r`` before each ``\\n`` is lost, a variable name that is not a shell identifier
loses every variable, and ``exec --help`` lists ``--no-eval``.
``APPTAINER_DOUBLE_SLOW_START`` makes chosen commands start late, as Apptainer does while it
mounts an image. Mounts, ``--pwd`` and isolation are only recorded; the real behaviour is
covered by the integration tests with real Apptainer.
"""

import json
import os
import re
import shutil
import sys
import time
from typing import NoReturn

VALUE_OPTIONS = {
    "--bind",
    "-B",
    "--mount",
    "--pwd",
    "--workdir",
    "-W",
    "--home",
    "-H",
    "--env",
    "--env-file",
    "--security",
    "--overlay",
    "-o",
    "--scratch",
    "-S",
    "--app",
    "--hostname",
    "--network",
    "--network-args",
    "--dns",
    "--fusemount",
    "--add-caps",
    "--drop-caps",
    "--no-mount",
}
SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def fatal(message: str) -> NoReturn:
    sys.stderr.write(f"FATAL:   {message}\n")
    sys.stderr.flush()
    sys.exit(255)


def main() -> None:
    args = sys.argv[1:]
    while args and args[0].startswith("-"):  # global options (--silent, -q)
        args.pop(0)
    mode, args = args[0], args[1:]
    if args == ["--help"]:
        print(f"Usage: apptainer {mode} [exec options...] <container> <command>")
        print("      --no-eval     do not shell evaluate env vars or OCI CMD/ENTRYPOINT/ARGS")
        return
    options: list[list[str]] = []
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in VALUE_OPTIONS:
            options.append([opt, args.pop(0)])
        else:
            options.append([opt])
    image, argv = args[0], args[1:]
    record = os.environ.get("APPTAINER_DOUBLE_RECORD")
    if record:
        with open(record, "a") as f:
            f.write(
                json.dumps({"mode": mode, "options": options, "image": image, "argv": argv}) + "\n"
            )
    if not os.path.exists(image):
        fatal(f"could not open image {image}: no such file or directory")
    env: dict[str, str] = {}
    injected = {
        k[len("APPTAINERENV_") :]: v for k, v in os.environ.items() if k.startswith("APPTAINERENV_")
    }
    if all(SHELL_NAME.match(k) for k in injected):
        for k, v in injected.items():
            env[k] = v.replace("\r\n", "\n")
    env.setdefault("PATH", os.environ.get("PATH", "/usr/bin:/bin"))
    for option in options:
        if option[0] == "--home":
            env["HOME"] = option[1].split(":", 1)[1]
    if mode == "run":
        with open(image) as f:
            argv = json.load(f).get("runscript", []) + argv
    if not argv:
        fatal("no command given")
    # "<seconds>:<text>": commands holding <text> start that much later (an image to mount).
    slow = os.environ.get("APPTAINER_DOUBLE_SLOW_START", "")
    if slow and slow.split(":", 1)[1] in " ".join(argv):
        time.sleep(float(slow.split(":", 1)[0]))
    if "/" in argv[0]:
        if not os.path.exists(argv[0]):
            fatal(f"stat {argv[0]}: no such file or directory")
        path = argv[0]
    else:
        found = shutil.which(argv[0], path=env["PATH"])
        if found is None:
            fatal(f'"{argv[0]}": executable file not found in $PATH')
        path = found
    os.execve(path, argv, env)


main()
