"""``make gpu-check``: everything equican checks on a GPU, in one command, with a JSON record of what happened.

On a machine where torch sees a CUDA device it

1. runs every test whose parameters or name select CUDA (``pytest tests -k cuda``): the ``device``-parametrized
   tests (``tests/conftest.py`` adds ``cuda`` to ``device`` when ``torch.cuda.is_available()``), i.e. every
   registered group's laws and gradcheck, the exactness tests, the testing toolkit's image strategies, plus the
   tests that name CUDA (device errors, ``device=cuda`` training);
2. runs a smoke check of what the device-parametrized tests do not reach (``--smoke DEVICE``, see
   [`smoke`]): for every registered group, a canonicalizer (the direct kind, whose network the DEQ shares) trained
   one step on the canonicalization loss on the GPU, and the ``dec`` and ``latent`` methods trained for one tiny
   epoch with ``device=cuda`` (the canonicalizer wrapper, the DEQ solver and the latent wrapper's hooks);
3. runs the performance suite's GPU section, ``benchmarks/suite.py --quick --device cuda`` (``--full-suite``: the
   full-size suite on the GPU instead, which takes longer than the 8-minute budget of the quick check);
4. writes ``docs/results/gpu.json`` (``--out``): the device, torch and CUDA versions, the test counts (passed,
   failed, skipped, errors), each step's wall time and command, and the suite's figures (its ``performance.json``).

``--smoke cpu`` runs the smoke check on the CPU (the test suite does, so the code of that step is tested on every
machine).

The step timeouts (300 + 90 + 90 s by default) bound the whole check to 8 minutes.

Exit status: 0 when every step passed, 1 when a test failed or a step did not finish (timed out or crashed),
2 on bad arguments.

On a machine without CUDA it prints ``gpu-check: skipped: ...`` and exits 0, writing nothing: an earlier
``gpu.json`` from a GPU machine stays as it was (a file saying "skipped" would replace real results).

    python scripts/gpu_check.py                    # what `make gpu-check` runs
    python scripts/gpu_check.py --out /tmp/gpu.json --pytest-args -x
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "results" / "gpu.json"
SKIP_MESSAGE = "gpu-check: skipped: torch sees no CUDA device on this machine; nothing was run or written"


def cuda_device() -> dict[str, Any] | None:
    """The CUDA device torch would use, or None when there is none (torch is imported here, not at load)."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1), "capability": f"{props.major}.{props.minor}",
            "torch": torch.__version__, "cuda": torch.version.cuda}


def _run(command: list[str], *, timeout: float) -> dict[str, Any]:
    """Run a step, streaming its output; its exit status, wall time and whether it timed out."""
    print(f"gpu-check: $ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        status = subprocess.run(command, cwd=ROOT, env=env, timeout=timeout, stdin=subprocess.DEVNULL).returncode
        timed_out = False
    except subprocess.TimeoutExpired:
        status, timed_out = None, True
    return {"command": " ".join(command), "exit_status": status, "timed_out": timed_out,
            "seconds": round(time.perf_counter() - started, 1)}


def junit_counts(path: Path) -> dict[str, int]:
    """``{"tests", "passed", "failed", "errors", "skipped"}`` from a pytest ``--junitxml`` file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    return {"tests": total["tests"], "passed": total["tests"] - total["failures"] - total["errors"] - total["skipped"],
            "failed": total["failures"], "errors": total["errors"], "skipped": total["skipped"]}


def smoke(device: str, out: Path) -> dict[str, Any]:
    """Run what the device-parametrized tests do not reach on ``device``; ``{check: "ok" | error text}``.

    Per registered group: a direct canonicalizer over it, one step of the canonicalization loss (forward, backward),
    its outputs on ``device`` and finite. Then the ``dec`` and ``latent`` methods, one tiny epoch each with
    evaluation, through ``equican.train.train`` on ``device`` (run directory under ``out``).
    """
    import torch

    from equican import list_groups, make_group
    from equican.canon import DirectCanonicalizer, UpdateNet
    from equican.canon.objective import canonicalization_loss
    from equican.config import apply_overrides, load_config
    from equican.train import train

    results: dict[str, Any] = {}
    for name in list_groups():
        try:
            torch.manual_seed(0)
            group = make_group(name)
            canon = DirectCanonicalizer(group, UpdateNet.for_group(group, 1, channels=(4, 8))).to(device)
            x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
            k = group.sample(4, generator=torch.Generator().manual_seed(1)).to(device)  # drawn on the CPU
            loss = canonicalization_loss(canon, x, k).loss.mean()
            loss.backward()
            grads = [p.grad for p in canon.parameters() if p.grad is not None]
            result = canon(x)
            assert result.x.device.type == torch.device(device).type, f"canonical input on {result.x.device}"
            assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads), "non-finite"
            results[f"canonicalizer[{name}]"] = "ok"
        except Exception as exc:  # one line per failure; the other checks still run
            results[f"canonicalizer[{name}]"] = f"{type(exc).__name__}: {exc}"
    tiny = ["data.train_limit=16", "data.test_limit=4", "data.options.cell=24", "data.options.canvas=24",
            "model.options.channels=[4, 8]", "optim.epochs=1", "optim.batch_size=8", "eval.limit=4",
            "eval.rescalings=2", "progress=false", f"device={device}"]
    for method in ("dec", "latent"):
        try:
            config = apply_overrides(load_config("demo"), [*tiny, f"method.name={method}",
                                                           f"out={json.dumps(str(out / method))}"])
            ev = train(config)["eval"]
            assert 0 <= ev["accuracy"] <= 1, f"accuracy {ev['accuracy']}"
            results[f"train[{method}]"] = "ok"
        except Exception as exc:
            results[f"train[{method}]"] = f"{type(exc).__name__}: {exc}"
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON to write (default docs/results/gpu.json)")
    parser.add_argument("--pytest-timeout", type=float, default=300, help="seconds for the tests (default 300)")
    parser.add_argument("--suite-timeout", type=float, default=90, help="seconds for the suite (default 90)")
    parser.add_argument("--full-suite", action="store_true", help="the full-size suite on the GPU, not --quick")
    parser.add_argument("--no-suite", action="store_true", help="only the tests")
    parser.add_argument("--smoke", metavar="DEVICE", default=None,
                        help="only run the smoke check on DEVICE (cpu or cuda), print its JSON and exit")
    parser.add_argument("--smoke-timeout", type=float, default=90, help="seconds for the smoke check (default 90)")
    parser.add_argument("--pytest-args", nargs=argparse.REMAINDER, default=[], help="passed on to pytest")
    args = parser.parse_args(argv)
    if args.smoke is not None:
        with tempfile.TemporaryDirectory(prefix="gpu_smoke_") as tmp:
            results = smoke(args.smoke, Path(tmp))
        print("SMOKE " + json.dumps(results), flush=True)
        return 0 if all(v == "ok" for v in results.values()) else 1

    device = cuda_device()
    if device is None:
        print(SKIP_MESSAGE, flush=True)
        return 0
    print(f"gpu-check: {device['name']} (torch {device['torch']}, CUDA {device['cuda']})", flush=True)
    started = time.perf_counter()
    record: dict[str, Any] = {"device": device, "python": platform.python_version(), "platform": platform.platform()}
    ok = True
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        junit = Path(tmp) / "junit.xml"
        step = _run([sys.executable, "-m", "pytest", "tests", "-k", "cuda", "-q", "-p", "no:cacheprovider",
                     f"--junitxml={junit}", *args.pytest_args], timeout=args.pytest_timeout)
        step.update(junit_counts(junit) if junit.is_file() else {})
        record["tests"] = step
        # pytest exits 5 when nothing was collected: on a CUDA machine that means the selection is broken.
        ok &= step["exit_status"] == 0 and step.get("tests", 0) > 0
        smoke_json = Path(tmp) / "smoke.txt"
        with open(smoke_json, "w", encoding="utf-8") as log:
            started_smoke = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, __file__, "--smoke", "cuda"], cwd=ROOT, stdout=log,
                                      stderr=subprocess.STDOUT, timeout=args.smoke_timeout,
                                      env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdin=subprocess.DEVNULL)
                status = proc.returncode
            except subprocess.TimeoutExpired:
                status = None
        text = smoke_json.read_text(encoding="utf-8")
        line = next((l for l in text.splitlines() if l.startswith("SMOKE ")), None)
        record["smoke"] = {"exit_status": status, "timed_out": status is None,
                           "seconds": round(time.perf_counter() - started_smoke, 1),
                           "checks": json.loads(line[len("SMOKE "):]) if line else None,
                           "output_tail": None if line else text[-2000:]}
        print(f"gpu-check: smoke {record['smoke']['checks']}", flush=True)
        ok &= status == 0
        if not args.no_suite:
            suite_out = Path(tmp) / "suite"
            command = [sys.executable, "benchmarks/suite.py", "--device", "cuda", "--out", str(suite_out)]
            step = _run(command if args.full_suite else [*command, "--quick"], timeout=args.suite_timeout)
            result = suite_out / "performance.json"
            step["figures"] = json.loads(result.read_text(encoding="utf-8")) if result.is_file() else None
            record["suite"] = step
            ok &= step["exit_status"] == 0
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["passed"] = bool(ok)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tests = record["tests"]
    print(f"gpu-check: tests {tests.get('passed', '?')} passed, {tests.get('failed', '?')} failed, "
          f"{tests.get('skipped', '?')} skipped ({tests['seconds']} s); "
          f"{'suite ' + str(record['suite']['seconds']) + ' s; ' if 'suite' in record else ''}"
          f"{'passed' if ok else 'FAILED'}; wrote {args.out}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
