#!/usr/bin/env python3
"""Runs every test and prints one closing line: 'N passed, N failed'.

Unit tests: every executable under <bin>/unit prints 'ok - name' / 'not ok - name' lines.
Integration tests: every tests/integration/test_*.py; each module-level function named
test_* is one test, run with a fresh harness (see tests/lib/harness.py). A test's directory
under var/test is removed when it passes and kept, with its logs, when it fails.

  python3 tests/run.py [--bin DIR] [--only SUBSTRING]
"""
import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))


def run_unit(bindir, only, results):
    unitdir = os.path.join(bindir, "unit")
    if not os.path.isdir(unitdir):
        return
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    for name in sorted(os.listdir(unitdir)):
        if only and only not in name:
            continue
        path = os.path.join(unitdir, name)
        proc = subprocess.run([path], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        seen = 0
        for line in proc.stdout.splitlines():
            if line.startswith("ok - "):
                results.append((f"unit/{name}/{line[5:]}", True, ""))
                seen += 1
            elif line.startswith("not ok - "):
                results.append((f"unit/{name}/{line[9:]}", False, proc.stderr[-4000:]))
                seen += 1
        if proc.returncode != 0 and all(ok for n, ok, _ in results if n.startswith(f"unit/{name}/")):
            # A crash (sanitizer report, abort) after the last test line is a failure too.
            results.append((f"unit/{name}/exit", False,
                            f"exit {proc.returncode}\n{proc.stderr[-4000:]}"))
        elif seen == 0:
            results.append((f"unit/{name}", False, "printed no test lines\n" + proc.stderr[-2000:]))
        for n, ok, _ in results[-seen or None:]:
            print(("ok   " if ok else "FAIL ") + n, flush=True)


def run_integration(bindir, only, results):
    import harness
    idir = os.path.join(ROOT, "tests", "integration")
    for fname in sorted(os.listdir(idir)):
        if not (fname.startswith("test_") and fname.endswith(".py")):
            continue
        spec = importlib.util.spec_from_file_location(fname[:-3], os.path.join(idir, fname))
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
        except Exception:
            results.append((f"{fname}:import", False, traceback.format_exc()))
            print(f"FAIL {fname}:import", flush=True)
            continue
        if hasattr(mod, "available"):
            why = mod.available()
            if why:
                print(f"skip {fname}: {why}", flush=True)
                continue
        tests = [(n, f) for n, f in vars(mod).items() if n.startswith("test_") and callable(f)]
        tests.sort(key=lambda t: t[1].__code__.co_firstlineno)
        for name, fn in tests:
            full = f"{fname[:-3]}.{name}"
            if only and only not in full:
                continue
            h = harness.Harness(ROOT, bindir, full)
            t0 = time.time()
            try:
                fn(h)
                h.close()
                h.check_sanitizers()
                shutil.rmtree(h.tmp, ignore_errors=True)
                results.append((full, True, ""))
                print(f"ok   {full} ({time.time() - t0:.1f}s)", flush=True)
            except Exception:
                detail = traceback.format_exc() + h.tail_logs()
                try:
                    h.close()
                except Exception:
                    detail += traceback.format_exc()
                results.append((full, False, detail))
                print(f"FAIL {full} ({time.time() - t0:.1f}s)", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build-asan/bin")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    bindir = os.path.join(ROOT, args.bin)
    results = []
    run_unit(bindir, args.only, results)
    run_integration(bindir, args.only, results)
    failed = [(n, d) for n, ok, d in results if not ok]
    for n, d in failed:
        print(f"\n=== FAIL {n}\n{d}")
    passed = len(results) - len(failed)
    print(f"\n{passed} passed, {len(failed)} failed")
    sys.exit(1 if failed or not results else 0)


if __name__ == "__main__":
    main()
