"""A process that imports distill once and forks one child per command: fault-injection tests kill
children with SIGKILL at chosen moments without paying torch's import time for every rerun.

Protocol: one JSON object per stdin line, ``{"args": [...], "env": {...}, "log": path}``; for each, one
stdout line ``{"rc": n}`` (negative: killed by signal -n). The parent never runs a torch operation,
so the children start with no thread pools to lose across the fork.
"""

import json
import os
import sys
import traceback

import accelerate  # noqa: F401
import transformers

import distill.pipeline.run  # noqa: F401  (imports the stages, targets, trainer, students, teachers)
from distill.cli import app

# what the commands import lazily, imported once here (importing runs no torch operation)
for name in ("AutoConfig", "AutoModel", "AutoTokenizer", "BertModel", "BertTokenizerFast", "GPT2Model"):
    getattr(transformers, name)


def run_child(job: dict) -> None:
    os.environ.update(job.get("env", {}))
    fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 0
    try:
        app(job["args"], prog_name="distill")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported through the exit code and the log
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(job)
        _, status = os.waitpid(pid, 0)
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"rc": rc}), flush=True)


if __name__ == "__main__":
    main()
