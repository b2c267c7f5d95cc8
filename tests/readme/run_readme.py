#!/usr/bin/env python3
"""The README, executed (ctest `readme.examples`).

Runs every command of the README's ```sh blocks (and `make demo`'s recipe from the Makefile) in a scratch folder
that looks like the repository (links to build/, configs/, scripts/, python/, tests/ (the fixtures), .data/, and ../shared when the
repository has one beside it), CPU-sized:
- `ssmlab train` and `ssmlab sweep` get `--set train.max_steps=2 --set train.eval_every=2` (a complete, tiny run);
- placeholders are replaced by real things: a run folder such as `runs/quickstart-1a2b3c4d`, `RUN`, `RUN_DIR` or
  `runs/demo/demo-XXXXXXXX` by the newest run folder of a command before it (matching the name where it has one),
  `/path/to/shared/data/...` by the shared data folder, `my-sweep.toml` by `configs/sweeps/mqar-cpu.toml`;
- `ssmlab results --filter "test_acc>=0.9"`: a bound on a metric becomes `>=0` (2-step runs reach none);
- where the machine cannot do what a command asks, the command is checked as far as the machine allows and the
  output says so: without a GPU, a `train` with `train.device=cuda` is resolved with `ssmlab config` (every key
  and value checked) and a `sweep --gpus` runs with `--dry-run`; without ../shared/data, commands that read it
  are resolved with `ssmlab config` instead of trained. `make demo` / `make test` themselves are not re-entered
  (the test is part of `make test`); `make demo`'s recipe lines are run instead.
Fails when a command exits non-zero, when a results table in the README has other columns than the sweep prints, when a command's output or the README names a config key (`--set KEY=`,
`` `KEY` ``, `KEY = value`) that `ssmlab list keys` does not know, or when a README command's file does not exist.
The README's ```python blocks and python/example.py run with the venv's python where it imports torch.

usage: run_readme.py --repo DIR --build DIR [--keep]
"""
import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

SECTIONS = ("run", "model", "task", "train", "ops", "analysis", "sweep")
TINY = ["--set", "train.max_steps=2", "--set", "train.eval_every=2"]


def sh_blocks(text):
    """Commands of the ```sh blocks: (line number, command text without its comment)."""
    out, inside = [], False
    for no, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            inside = (not inside) and line.strip() == "```sh"
            continue
        if inside and line.strip() and not line.lstrip().startswith("#"):
            out.append((no, line))
    return out


def split_command(line):
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def known_keys(ssmlab):
    text = subprocess.run([ssmlab, "list", "keys"], capture_output=True, text=True, check=True).stdout
    keys = set()
    for line in text.splitlines():
        m = re.match(r"^\s+([a-z0-9_]+(?:\.[a-z0-9_\[\]]+)+)\s", line)
        if m:
            keys.add(m.group(1))
    if len(keys) < 50:
        raise SystemExit(f"ssmlab list keys printed only {len(keys)} keys:\n{text[:2000]}")
    return keys


def key_known(key, keys):
    """A leaf key, a table above leaf keys (`analysis.influence`), or a segment key (`task.mqar.train[0].seq_len`)."""
    k = re.sub(r"\[\d+\]", "", key)
    if k in keys:
        return True
    if any(x.startswith(k + ".") for x in keys):
        return True
    # segment arrays: list keys prints them as task.mqar.train[].seq_len or task.mqar.train.seq_len
    return any(re.sub(r"\[\]", "", x) == k for x in keys)


KEY_IN_TEXT = re.compile(r"(?:--set[ =]|`)((?:%s)\.[a-z0-9_]+(?:\.[a-z0-9_\[\]]+|\[\d+\])*)" % "|".join(SECTIONS))


FILE_SUFFIXES = {"json", "jsonl", "log", "csv", "toml", "sqlite", "safetensors", "html", "png", "svg", "gp", "tokens"}


def keys_in(text):
    """Dotted config keys named in text; file names such as `model.safetensors` or `sweep.json` are not keys."""
    found = {m.group(1).rstrip(".") for m in KEY_IN_TEXT.finditer(text)}
    return {k for k in found if k.rsplit(".", 1)[-1] not in FILE_SUFFIXES}


class Runner:
    def __init__(self, repo, build, work, keys):
        self.repo, self.build, self.work, self.keys = repo, build, work, keys
        self.failures, self.notes = [], []
        self.runs = []  # run folders made so far, newest last
        # Whether the newest `train` was really run here: a RUN / RUN_DIR placeholder after one that was only
        # resolved with `ssmlab config` (its data or GPU is not here) stands for a run that does not exist.
        self.last_train_made = True
        self.outputs = []  # every command's output
        self.has_gpu = shutil.which("nvidia-smi") is not None and subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True).returncode == 0
        shared = os.path.realpath(os.path.join(repo, "..", "shared"))
        self.shared = shared if os.path.isdir(os.path.join(shared, "data")) else None

    def note(self, text):
        self.notes.append(text)
        print("  note: " + text, flush=True)

    def fail(self, text):
        self.failures.append(text)
        print("  FAIL: " + text, flush=True)

    def newest_run(self, name_hint=None):
        found = [r for r in self.runs if os.path.isdir(os.path.join(self.work, r))]
        if name_hint:
            hinted = [r for r in found if os.path.basename(r).startswith(name_hint)]
            if hinted:
                return hinted[-1]
            # a folder of sweep runs: runs/demo/demo-XXXXXXXX
            pattern = os.path.join(self.work, os.path.dirname(name_hint) or ".", os.path.basename(name_hint) + "*")
            matches = sorted(glob.glob(pattern))
            if matches:
                return os.path.relpath(matches[-1], self.work)
        return found[-1] if found else None

    def substitute(self, argv, where):
        out = []
        for a in argv:
            m = re.fullmatch(r"(.*?)(-1a2b3c4d|-X{8})", a)
            if a in ("RUN", "RUN_DIR") and not self.last_train_made:
                return "no-run"
            if a in ("RUN", "RUN_DIR") or m:
                hint = None
                if m:
                    hint = m.group(1)
                run = self.newest_run(hint)
                if run is None:
                    self.fail(f"{where}: no run folder made before it to stand for {a}")
                    return None
                out.append(run)
            elif a.startswith("/path/to/shared/"):
                if self.shared is None:
                    return "no-shared"
                out.append(os.path.join(self.shared, a[len("/path/to/shared/"):]))
            elif a == "my-sweep.toml":
                out.append("configs/sweeps/mqar-cpu.toml")
            else:
                out.append(a)
        return out

    def needs_shared_data(self, config_path):
        """Whether a config reads ../shared (text corpora, GPT-2 files) or .data/cifar10 made from it."""
        path = os.path.join(self.work, config_path)
        if not os.path.isfile(path):
            return False
        text = open(path, encoding="utf-8").read()
        base = re.search(r'^base\s*=\s*"([^"]+)"', text, re.M)
        if base:
            text += open(os.path.join(os.path.dirname(path), base.group(1)), encoding="utf-8").read()
        if re.search(r'dataset\s*=\s*"cifar10"', text) and not os.path.isfile(
                os.path.join(self.work, ".data", "cifar10", "data_batch_1.bin")):
            return True
        return self.shared is None and (re.search(r'name\s*=\s*"text"', text) is not None)

    def run(self, argv, where, timeout=900):
        print(f"$ {' '.join(shlex.quote(a) for a in argv)}    [{where}]", flush=True)
        t0 = time.time()
        env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="80")
        try:
            p = subprocess.run(argv, cwd=self.work, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            self.fail(f"{where}: timed out after {timeout} s")
            return None
        out = p.stdout + p.stderr
        self.outputs.append(out)
        print("    " + "\n    ".join(out.strip().splitlines()[-6:]) + f"\n    (exit {p.returncode}, {time.time() - t0:.1f} s)",
              flush=True)
        if p.returncode != 0:
            self.fail(f"{where}: exit {p.returncode}\n{out[-3000:]}")
        for k in sorted(keys_in(out)):
            if not key_known(k, self.keys):
                self.fail(f"{where}: the output names config key '{k}', which `ssmlab list keys` does not know")
        for line in out.splitlines():
            m = re.match(r"^ssmlab train: .* -> (\S+)$", line)
            if m:
                self.runs.append(m.group(1))
        if argv[1:2] == ["sweep"] and "--dry-run" not in argv:
            # the sweep folder's runs, in their order
            folder = re.search(r"-> (\S+)", out)
            if folder:
                for d in sorted(glob.glob(os.path.join(self.work, folder.group(1), "*", "config.toml"))):
                    self.runs.append(os.path.relpath(os.path.dirname(d), self.work))
        return p

    def command(self, argv, where):
        if not argv:
            return
        prog = argv[0]
        if prog == "make":
            self.note(f"{where}: `{' '.join(argv)}` is the entry point itself (not re-entered; its recipe runs)")
            return
        if prog in ("build/ssmlab", "ssmlab", "./build/ssmlab"):
            argv = [os.path.join(self.work, "build", "ssmlab")] + argv[1:]
            sub = argv[1] if len(argv) > 1 else ""
            argv = self.substitute(argv, where)
            if argv is None:
                return
            if argv == "no-shared":
                self.note(f"{where}: needs ../shared/data, which this checkout has not; not run")
                return
            if argv == "no-run":
                self.note(f"{where}: its run is the one the train command before it would make, which was not run "
                          "here (data or GPU missing); not run")
                return
            for a in argv[2:3]:
                if sub in ("train", "sweep", "config", "tokenize") and not a.startswith("-") and not os.path.exists(
                        os.path.join(self.work, a)):
                    self.fail(f"{where}: {a} does not exist")
                    return
            if sub in ("train", "sweep"):
                gpu = "train.device=cuda" in argv or "--gpus" in argv
                if sub == "train" and ((gpu and not self.has_gpu) or self.needs_shared_data(argv[2])):
                    why = "no GPU here" if gpu and not self.has_gpu else "its data is not here"
                    # `config` takes the --set overrides but not --out, nor the device it cannot use here
                    rest, args = [], argv[3:]
                    for opt, val in zip(args[::2], args[1::2]):
                        if opt == "--set" and val != "train.device=cuda":
                            rest += [opt, val]
                    self.note(f"{where}: {why}; resolved with `ssmlab config` instead of trained")
                    self.last_train_made = False
                    self.run([argv[0], "config", argv[2]] + rest, where)
                    return
                if sub == "sweep" and gpu and not self.has_gpu:
                    self.note(f"{where}: no GPU here; run with --dry-run")
                    self.run(argv + ["--dry-run"], where)
                    return
                if "--dry-run" not in argv and "--help" not in argv:
                    argv = argv + TINY
                    self.last_train_made = True
            if sub == "results":
                # 2-step runs reach no accuracy threshold: a metric filter keeps its form, its bound drops to 0
                argv = [re.sub(r"^((?:test|train)_[a-z_/0-9]+)(>=|>)[0-9.eE+-]+$", r"\1>=0", a) for a in argv]
            if sub == "tokenize" and self.needs_shared_data(argv[2]):
                self.note(f"{where}: the corpus or tokenizer files are not here; resolved with `ssmlab config`")
                self.run([argv[0], "config", argv[2]], where)
                return
            self.run(argv, where)
            return
        if prog.startswith("scripts/"):
            argv = self.substitute(argv, where)
            if argv in ("no-shared", "no-run"):
                self.note(f"{where}: needs ../shared/data or a run made from it, which this checkout has not; not run")
                return
            if argv is None:
                return
            self.run(["bash"] + argv, where)
            return
        self.fail(f"{where}: `{prog}` is a command this test does not know how to run; teach tests/readme/run_readme.py")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    repo, build = os.path.realpath(args.repo), os.path.realpath(args.build)
    readme = open(os.path.join(repo, "README.md"), encoding="utf-8").read()
    ssmlab = os.path.join(build, "ssmlab")
    keys = known_keys(ssmlab)

    scratch = tempfile.mkdtemp(prefix="ssmlab-readme-")
    work = os.path.join(scratch, "repo")
    os.mkdir(work)
    os.symlink(build, os.path.join(work, "build"))
    for name in ("configs", "scripts", "python", "docs", "Makefile", "tests"):
        os.symlink(os.path.join(repo, name), os.path.join(work, name))
    os.makedirs(os.path.join(repo, ".data"), exist_ok=True)  # caches (tokens, CIFAR binaries) stay with the repo
    os.symlink(os.path.join(repo, ".data"), os.path.join(work, ".data"))
    shared = os.path.realpath(os.path.join(repo, "..", "shared"))
    if os.path.isdir(shared):
        os.symlink(shared, os.path.join(scratch, "shared"))
    r = Runner(repo, build, work, keys)

    # 1. Keys named in the README's text.
    for k in sorted(keys_in(readme)):
        if not key_known(k, keys):
            r.fail(f"README.md names config key '{k}', which `ssmlab list keys` does not know")
    for m in re.finditer(r"^\s*\"?((?:%s)\.[a-z0-9_.\[\]]+)\"?\s*=" % "|".join(SECTIONS), readme, re.M):
        if not key_known(m.group(1), keys):
            r.fail(f"README.md sets config key '{m.group(1)}' in a TOML example, which `ssmlab list keys` does not know")

    # 2. `make demo`'s recipe, then every README command in order.
    makefile = open(os.path.join(repo, "Makefile"), encoding="utf-8").read()
    demo = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.M)
    if not demo:
        r.fail("Makefile has no demo target")
    else:
        for line in demo.group(1).splitlines():
            line = line.strip().lstrip("@").replace("./$(BUILD)/", "build/").replace("$(BUILD)/", "build/")
            r.command(split_command(line), "Makefile demo")
    commands = sh_blocks(readme)
    if len(commands) < 10:
        r.fail(f"README.md has only {len(commands)} sh commands; the block parser is broken")
    for no, line in commands:
        r.command(split_command(line), f"README.md:{no}")

    # 3. A results table shown in the README has the columns that the sweep prints.
    for header in re.findall(r"^(run +status +.*)$", readme, re.M):
        cols = header.split()
        printed = [line.split() for out in r.outputs for line in out.splitlines() if re.match(r"^run +status ", line)]
        if cols not in printed:
            r.fail(f"README.md's results table has columns {cols}; the sweeps printed "
                   f"{printed[0] if printed else 'no table'}")

    # 4. The README's ```python blocks and python/example.py, where the venv's python has torch.
    py = os.path.join(repo, ".venv", "bin", "python")
    if os.path.exists(os.path.join(repo, "python", "example.py")) and os.path.exists(py):
        has_torch = subprocess.run([py, "-c", "import torch"], capture_output=True).returncode == 0
        if has_torch:
            for i, block in enumerate(re.findall(r"^```python\n(.*?)^```", readme, re.M | re.S)):
                path = os.path.join(work, f"readme_block_{i}.py")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(block)
                r.run([py, path], f"README.md python block {i + 1}")
            r.run([py, os.path.join(repo, "python", "example.py"), os.path.join(build, "src", "libssmlab_ops.so"), "cpu"],
                  "python/example.py")
        else:
            r.note("python/example.py: the venv's python cannot import torch; not run")

    print(f"\n{len(commands)} README commands; {len(r.notes)} notes; {len(r.failures)} failures")
    for n in r.notes:
        print("note: " + n)
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print("scratch folder: " + scratch)
    if r.failures:
        print("\nFAILED:\n" + "\n".join("- " + f.splitlines()[0] for f in r.failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
