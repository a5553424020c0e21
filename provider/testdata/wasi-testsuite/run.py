#!/usr/bin/env python3
"""Runs the official WASI test suite's preview-1 tests through `provider exec` as shipped.

Usage: run.py SUITE_DIR [PROVIDER_BIN]

SUITE_DIR is a checkout of https://github.com/WebAssembly/wasi-testsuite (branch
prod/testsuite-base, which holds the prebuilt tests). Each `tests/*/testsuite/wasm32-wasip1/*.wasm`
becomes a definition (its module, the JSON spec's args and env) run with
`provider exec --allow-unreviewed --json`; a test passes when the exit code and, where the spec
gives them, stdout and stderr match. A spec's `root` directory is passed as `--input` items
(pinfold has no way to seed the scratch root `/` from the requestor: its contents then appear
under `/input`, and the test sees an empty `/`). Prints one line per test and a summary.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def toml_str(s: str) -> str:
    return json.dumps(s)


def main() -> int:
    suite = Path(sys.argv[1])
    provider = sys.argv[2] if len(sys.argv) > 2 else "provider"
    tests = sorted(suite.glob("tests/*/testsuite/wasm32-wasip1/*.wasm"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for wasm in tests:
            lang = wasm.parts[-4]
            spec_path = wasm.with_suffix(".json")
            spec = json.loads(spec_path.read_text()) if spec_path.exists() else {}
            if "operations" in spec:
                results[(lang, wasm.stem)] = ("skip", "operation-based spec")
                continue
            d = Path(tmp) / f"{lang}-{wasm.stem}"
            d.mkdir()
            (d / "guest.wasm").write_bytes(wasm.read_bytes())
            args = ", ".join(toml_str(a) for a in spec.get("args", []))
            env = "\n".join(f"{k} = {toml_str(v)}" for k, v in spec.get("env", {}).items())
            (d / "taskdef.toml").write_text(
                f'format = 1\nname = "wasi-{wasm.stem.lower().replace("_", "-")[:60]}"\n'
                f'version = "1.0.0"\ndescription = "wasi-testsuite {lang} {wasm.stem}"\n'
                f'license = "Apache-2.0"\n\n[runtime]\nkind = "wasm"\nmodule = "guest.wasm"\n'
                f'args = [{args}]\n\n[limits]\nmemory = "256MiB"\ntimeout = "30s"\n'
                f'output = "16MiB"\n\n[capabilities]\n'
                + (f"\n[capabilities.env]\n{env}\n" if env else "")
            )
            cmd = [provider, "exec", "--allow-unreviewed", "--json"]
            root = spec.get("root")
            if root:
                for item in sorted((wasm.parent / root).iterdir()):
                    if item.name != ".keep" and item.name != ".gitignore":
                        cmd += ["--input", str(item)]
            cmd.append(str(d))
            p = subprocess.run(cmd, capture_output=True, text=True)
            try:
                out = json.loads(p.stdout)
            except json.JSONDecodeError:
                results[(lang, wasm.stem)] = ("fail", f"exit {p.returncode}: {p.stderr.strip()[-300:]}")
                continue
            want = spec.get("exit_code", 0)
            got = out.get("exit_code")
            ok = got == want
            why = f"status {out['status']} exit {got} (want {want}): {out.get('reason') or ''}"
            if ok and "stdout" in spec and out.get("stdout") != spec["stdout"]:
                ok, why = False, f"stdout {out.get('stdout')!r} (want {spec['stdout']!r})"
            if ok and "stderr" in spec and out.get("stderr") != spec["stderr"]:
                ok, why = False, f"stderr {out.get('stderr')!r} (want {spec['stderr']!r})"
            if not ok:
                why += " | " + out.get("stderr", "")[-300:].replace("\n", " ")
            results[(lang, wasm.stem)] = ("pass" if ok else "fail", "" if ok else why)
    for (lang, name), (verdict, why) in sorted(results.items()):
        print(f"{verdict:4} {lang:14} {name} {why}")
    by = {}
    for (lang, _), (verdict, _) in results.items():
        by.setdefault(lang, {}).setdefault(verdict, 0)
        by[lang][verdict] += 1
    total = sum(1 for v, _ in results.values() if v != "skip")
    passed = sum(1 for v, _ in results.values() if v == "pass")
    for lang, counts in sorted(by.items()):
        print(f"summary {lang}: {counts}")
    print(f"summary: {passed} of {total} passed ({100.0 * passed / max(total, 1):.1f}%)")
    return 0 if passed == total else 1


if __name__ == "__main__":
    sys.exit(main())
