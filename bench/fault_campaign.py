#!/usr/bin/env python
"""Fault campaign (issue 11): the real CLI run as subprocesses under injected faults, then recovered the
documented way and checked against an uninterrupted reference run.

Faults: ``kill -9`` / SIGTERM / SIGINT at random moments of a plain ``generate``, a ``--resume``, an
``--overwrite`` over a finished dataset, ``regdpo manifest`` beside a generator (one or two shards) and on
its own, a 2-shard run, ``regdpo prune`` and ``regdpo select``; a real full disk (a small ``tmpfs`` mounted
as the output folder, several sizes; needs root and ``mount``, else that class is skipped and says so) and
``RLIMIT_FSIZE`` (``ulimit -f``); symbolic links planted in the dataset (video, stream, frame, ``meta.json``,
``manifest.json``, lock, ``.staging``, ``_preview``, ``_failed``, audit files) pointing to a sentinel folder;
traversal and odd names (``../../x``, ``/etc``, absolute paths, NUL, newline) in ``manifest.json``,
``meta.json``, ``selection.json``, ``audit.json`` fed to ``DPODataset``, ``audit``, ``preview``, ``verify``,
``manifest``, ``select``, ``prune`` and ``generate --resume``. Issue 18: a named pipe, socket, device link or
link loop named like a frame or a video file in ``--video_root`` (``special_source``: the run ends, the good
video is written, each bad one recorded as failed with one line; repaired, ``--resume``) or in place of a
frame, ``meta.json``, checksums, manifest, audit, selection or failure record of a finished dataset under
``audit``, ``verify``, ``preview``, ``DPODataset`` (with and without ``skip_invalid``), ``generate --resume``,
``manifest``, ``select``, ``prune`` (``special_dataset``: each ends within 120 s, no traceback); ``regdpo
preview`` on a full tmpfs or under ``ulimit -f`` (``preview_disk``: one line naming the file); SIGINT / SIGTERM
in the first 0.4 s of ``regdpo manifest``, while its modules load (``manifest_startup``); ``regdpo launch``
with two CPU workers killed with -9 (``launch_kill``: no worker may outlive it by 15 s; then ``--resume``).
Hostile JSON (``hostile_json``, issue 18): a ``meta.json``, failure record, manifest, selected manifest,
``audit.json``, ``selection.json`` or ``score.json`` nested 100000 or 40 deep, holding a 5000-digit integer or
``NaN``, larger than its kind's limit, not UTF-8, cut, not an object, or with a field of the wrong type (a string
frame count, a null ``source``, ``"attempts": "abc"``, ...), under each command that reads it: no traceback,
``verify`` exits 1 naming it, ``manifest`` passes over a bad ``meta.json``; restored, the command again
(``--quick``: one case per file kind).

Oracle after each case (after recovering: ``--resume``, a rerun, freeing space): the dataset's files equal
the reference's byte for byte (``meta.json`` minus ``timings``; run locks ignored; derived reports a case
reruns, e.g. ``audit.json``, excluded), ``regdpo verify`` passes, nothing changed outside the output folder
(the case folder around it, sentinel and decoy videos included, is hashed before and after), no traceback
in any stderr, exit statuses as docs/generate.md "Exit status" documents them.

The case list is drawn from ``--seed`` (same seed, same cases and fault times; where a signal lands in the
program still depends on the machine's speed). Prints one line per case and a JSON summary per class and in
total (``--json FILE`` too). ``--quick``: one case of each kind (about a minute or two).

    python bench/fault_campaign.py --quick
    python bench/fault_campaign.py --cases 300 --seed 1 --json campaign.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
"""The fixtures (``--data`` overrides: a worktree elsewhere than beside ``shared/``)."""
GEN = [sys.executable, str(REPO / "generate_dpo_negatives.py")]
REG = [sys.executable, "-m", "regdpo"]
LOCK = ".lock"
META = "meta.json"
DERIVED_REPORTS = ("audit.json", "audit.html", "_preview", "prune.json")
"""Reports a case may rewrite (their timings differ run to run): excluded where a case reruns their command."""
KNOWN_ROOTS: list[str] = []
"""The reference datasets' paths: records copied from them name them (replaced by ``ROOT`` when compared)."""
TRACEBACK = "Traceback (most recent call last)"
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
EXPECTED_AFTER = {"KILL": {-9}, "TERM": {143, -15}, "INT": {130, -2}}
"""Exit statuses after a signal that landed: 143 / 130 documented; -15 / -2 if it came before Python ran."""
BAD_NAMES = ["../../x", "../outside_vid", "/etc", "{case}/a/outside_vid", "/tmp", "a\u0000b", "a\nb", "..", ".",
             "x/../../y", "davis_tennis/../../outside_vid", "", "a" * 300, "-rf", "davis_tennis/"]
DATASET_SCRIPT = r"""
import argparse, json, sys
import torch
from regdpo.dataset import DPODataset
from regdpo.errors import RegdpoError
class Tok:
    model_max_length = 77
    def __call__(self, text, max_length, padding, truncation, return_tensors):
        ids = [49406] + [100 + len(w) for w in text.split()][: max_length - 2] + [49407]
        return {"input_ids": torch.tensor([ids + [49407] * (max_length - len(ids))])}
a = argparse.Namespace(dpo_data_root=sys.argv[1], nframes=12, resolution=128, proportion_empty_prompts=0,
                       boundary_dilation=7, skip_invalid=len(sys.argv) > 2 and sys.argv[2] == "skip_invalid")
try:
    ds = DPODataset(a, Tok())
    for i in range(0, len(ds), max(1, len(ds) // 4)):
        ds[i]
except (RegdpoError, ValueError, OSError) as e:
    print(f"DPODataset: error: {e}", file=sys.stderr)
    sys.exit(1)
print(json.dumps(sorted({p.video for p in ds.pairs})))
"""


HOSTILITIES = ("deep_100000", "deep_40", "huge_int", "nan", "too_large", "not_utf8", "truncated", "not_object")
"""What ``hostile_text`` does to a JSON file (``wrong_type``: a field from ``WRONG_TYPES`` instead)."""
JSON_COMMANDS = {
    "meta_json": ("manifest", "verify", "gen_resume", "audit", "preview", "prune", "select", "dataset_skip"),
    "failed_record": ("manifest", "verify", "gen_resume"),
    "manifest_json": ("verify", "audit", "select", "dataset", "dataset_skip", "preview", "manifest"),
    "manifest_selected": ("verify",),
    "audit_json": ("select", "verify"),
    "selection": ("prune", "verify"),
    "score_json": ("select", "verify"),
}
"""Per JSON file kind of a dataset, the commands that read it (``Campaign._command`` names)."""
WRONG_TYPES: dict[str, dict[str, tuple[tuple[Any, ...], Any]]] = {
    "meta_json": {"num_frames": (("num_frames",), "12"), "source": (("source",), None),
                  "source_id": (("source", "id"), [1]), "prompt": (("prompt",), 5), "seed": (("seed",), "x"),
                  "mask_index": (("mask_index",), -1), "generator": (("generator",), []),
                  "timings": (("timings",), {"decode": "slow"})},
    "failed_record": {"attempts": (("attempts",), "abc"), "status": (("status",), 5), "name": (("name",), None),
                      "attempts_huge": (("attempts",), 10**40)},
    "manifest_json": {"num_frames": (("videos", 0, "num_frames"), "12"), "prompt": (("videos", 0, "prompt"), None),
                      "source_clip": (("videos", 0, "source_clip"), 5), "failed": (("failed",), [1]),
                      "videos": (("videos",), {"a": 1})},
    "manifest_selected": {"num_frames": (("videos", 0, "num_frames"), "12"), "width": (("videos", 0, "width"), 10**30)},
    "audit_json": {"quality_score": (("items", 0, "quality_score"), "x"), "items": (("items",), 5),
                   "video": (("items", 0, "video"), None), "band": (("band",), "wide")},
    "selection": {"considered": (("considered",), None), "pick_video": (("picks", 0, "video"), 5),
                  "picks": (("picks",), {})},
    "score_json": {"ref_margin": (("items", 0, "ref_margin"), "x"), "video": (("items", 0, "video"), [1]),
                   "items": (("items",), None)},
}
"""Per JSON file kind, fields set to a value of the wrong type or range: ``(path in the file, value)``."""


def hostile_text(text: str, hostility: str) -> str | bytes:
    """The JSON text ``text`` made hostile (``HOSTILITIES``)."""
    body = text.rstrip()
    inside = body[:-1].rstrip() + ", " if body.endswith("}") and body[:-1].rstrip() != "{" else "{"
    if hostility == "deep_100000":
        return "[" * 100_000 + "]" * 100_000
    if hostility == "deep_40":
        return inside + '"x": ' + "[" * 40 + "]" * 40 + "}"
    if hostility == "huge_int":
        return inside + '"x": ' + "9" * 5000 + "}"
    if hostility == "nan":
        return inside + '"x": NaN}'
    if hostility == "too_large":  # past the per-video record's 16 MiB
        return inside + '"x": "' + "a" * ((16 << 20) + 16) + '"}'
    if hostility == "not_utf8":
        return b"\xff\xfe" + text.encode()
    if hostility == "truncated":
        return text[: len(text) // 2]
    if hostility == "not_object":
        return "[1, 2, 3]"
    raise ValueError(hostility)


def gen_flags(out: Path, *extra: str) -> list[str]:
    """The generator run every case uses: the fixtures, 12 frames at 128 px, 2 masks per clip (10 videos)."""
    return ["--davis_root", str(DATA / "DAVIS"), "--ytvos_root", str(DATA / "YTBV"), "--output_dir", str(out),
            "--nframes", "12", "--resolution", "128", "--seed", "5", "--masks_per_clip", "2", "--no_progress",
            *extra]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [e.get("PYTHONPATH")])])
    return e


# ---------------------------------------------------------------- dataset comparison and hashing


def output_files(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every file under ``root`` but the run locks (and top-level ``exclude`` names): bytes, ``meta.json``
    parsed minus its ``timings``; a link is recorded as a link."""
    out: dict[str, Any] = {}
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] in exclude:
            continue
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = (rel_dir / name).as_posix()
            if name.startswith(LOCK) or (not rel_dir.parts and name in exclude):
                continue
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif not path.is_file():  # a FIFO, a socket: never opened (it would block the campaign)
                out[rel] = ("special", os.lstat(path).st_mode)
            elif name == META:
                try:
                    meta = json.loads(path.read_text())
                    meta.pop("timings", None)
                    out[rel] = meta
                except ValueError:
                    out[rel] = path.read_bytes()
            elif name.endswith(".json"):  # records of derived files name the dataset's path (or the copied one's)
                data = path.read_bytes()
                for known in sorted({str(root), *KNOWN_ROOTS}, key=len, reverse=True):
                    data = data.replace(known.encode(), b"ROOT")
                out[rel] = data
            else:
                out[rel] = path.read_bytes()
    return out


def tree_hash(root: Path, skip: tuple[Path, ...] = ()) -> str:
    """Hash of everything under ``root`` (names, kinds, link targets, bytes), never following links."""
    h = hashlib.sha256()
    skip_s = {str(p) for p in skip}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) not in skip_s)
        h.update(f"D {Path(dirpath).relative_to(root)}\n".encode())
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                h.update(f"L {name} {os.readlink(path)}\n".encode())
            elif not os.path.isfile(path):  # a FIFO, a socket: never opened
                h.update(f"S {name} {os.lstat(path).st_mode}\n".encode())
            else:
                with open(path, "rb") as fh:
                    h.update(f"F {name} ".encode() + hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


def disk_usage(root: Path) -> int:
    """Bytes ``root`` takes on disk (allocated blocks, 4 KiB per folder), as a tmpfs counts them."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        total += 4096 * (1 + len(dirnames))
        total += sum(os.lstat(os.path.join(dirpath, f)).st_blocks * 512 for f in filenames)
    return total


def running(proc: subprocess.Popen) -> bool:
    """Whether ``proc`` has not exited yet (an exited, unreaped child ignores signals)."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


# ---------------------------------------------------------------- one case


@dataclass
class Case:
    """One faulted case: what ran, and what its checks found."""

    cls: str
    params: dict[str, Any]
    dir: Path
    runs: list[dict[str, Any]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    bad_exit: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    landed: bool = False
    startup_interrupts: int = 0
    skipped: str = ""

    @property
    def out(self) -> Path:
        return self.dir / "a" / "out"

    @property
    def survived(self) -> bool:
        return not (self.lost or self.different or self.extra or self.outside or self.tracebacks or self.bad_exit
                    or self.problems)

    # -- running commands
    def start(self, cmd: list[str], preexec: Callable[[], None] | None = None) -> subprocess.Popen:
        def child():  # Ctrl-C as in a terminal, even when the campaign runs in the background (SIGINT ignored)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if preexec is not None:
                preexec()

        return subprocess.Popen(cmd, cwd=self.dir, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", preexec_fn=child)

    def finish(self, proc: subprocess.Popen, label: str, expect: set[int], timeout: float = 300,
               fault: tuple[str, float] | None = None) -> int:
        """Wait for ``proc`` (sending ``fault = (signal, delay)`` first) and check its exit and stderr."""
        landed = False
        if fault is not None:
            sig, delay = fault
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                landed = running(proc)
                if landed:
                    os.kill(proc.pid, SIGNALS[sig])
            self.landed |= landed
            expect = EXPECTED_AFTER[sig] if landed else {0}
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            self.problems.append(f"{label}: hung for {timeout} s")
        rc = proc.returncode
        self.runs.append({"run": label, "rc": rc, "fault": list(fault) if fault else None, "landed": landed,
                          "stderr_tail": stderr[-300:], "stdout": stdout[-2000:]})
        if TRACEBACK in stderr:
            tb = stderr[stderr.index(TRACEBACK):]
            if landed and fault[0] == "INT" and tb.rstrip().endswith("KeyboardInterrupt") and str(REPO) not in tb:
                self.startup_interrupts += 1  # Ctrl-C while the interpreter itself starts, before any project code
                expect = expect | {1, -2}
            else:
                self.tracebacks.append(f"{label}: {tb[:1500]}")
        if rc not in expect:
            self.bad_exit.append(f"{label}: exit {rc}, expected {sorted(expect)}: {stderr.strip()[-300:]}")
        return rc

    def run(self, cmd: list[str], label: str, expect: set[int] = frozenset({0}), fault=None, preexec=None,
            timeout: float = 300) -> int:
        return self.finish(self.start(cmd, preexec), label, set(expect), timeout, fault)

    # -- checks
    def snapshot_outside(self) -> None:
        self._outside_before = tree_hash(self.dir, skip=(self.out,))
        self._listing_before = sorted(os.listdir(self.dir))

    def check_outside(self) -> None:
        if tree_hash(self.dir, skip=(self.out,)) != self._outside_before:
            now = sorted(os.listdir(self.dir))
            self.outside.append(f"the case folder outside {self.out.name}/ changed (entries {self._listing_before} "
                                f"-> {now})")

    def check_dataset(self, expected: dict[str, Any], root: Path | None = None, exclude: tuple[str, ...] = (),
                      verify: bool = True) -> None:
        root = root or self.out
        got = output_files(root, exclude)
        want = {k: v for k, v in expected.items() if k.split("/", 1)[0] not in exclude}
        self.lost += sorted(set(want) - set(got))
        self.different += sorted(k for k in set(want) & set(got) if want[k] != got[k])
        self.extra += sorted(set(got) - set(want))
        if verify:
            self.run(REG + ["verify", str(root)], "verify")

    def result(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("cls", "params", "landed", "lost", "different", "extra", "outside",
                                           "tracebacks", "bad_exit", "problems", "skipped", "startup_interrupts")}
        d["survived"] = self.survived
        d["runs"] = self.runs
        return d


# ---------------------------------------------------------------- the campaign


class Campaign:
    def __init__(self, work: Path, seed: int):
        self.work = work
        self.rng = random.Random(seed)
        self.tmpfs_reason = self._probe_tmpfs()

    # -- references (uninterrupted runs)
    def build_references(self) -> None:
        """The uninterrupted generator run every case is compared with (audited / pruned copies on first use)."""
        self.ref = self.work / "ref" / "plain"
        KNOWN_ROOTS.append(str(self.ref))
        t = time.monotonic()
        self._ref_run(GEN + gen_flags(self.ref))
        self.t_gen = time.monotonic() - t
        t = time.monotonic()  # a second, warm run: fault times are fractions of the faster of the two
        warm = self.work / "ref" / "warm"
        self._ref_run(GEN + gen_flags(warm))
        self.t_gen = min(self.t_gen, time.monotonic() - t)
        shutil.rmtree(warm)
        self.ref_files = output_files(self.ref)
        t = time.monotonic()
        self._ref_run(REG + ["manifest", str(self.ref)])
        self.t_manifest = time.monotonic() - t
        self.videos = sorted(p.name for p in self.ref.iterdir() if (p / META).is_file())
        self.ref_bytes = disk_usage(self.ref)

    @functools.cached_property
    def ref_audited(self) -> Path:
        """The reference after ``regdpo audit`` and ``regdpo select`` (``self.t_select``: select's time)."""
        path = self.work / "ref" / "audited"
        KNOWN_ROOTS.append(str(path))
        shutil.copytree(self.ref, path, symlinks=True)
        self._ref_run(REG + ["audit", str(path)])
        t = time.monotonic()
        self._ref_run(REG + ["select", str(path)])
        self.t_select = time.monotonic() - t
        return path

    @functools.cached_property
    def audited_files(self) -> dict[str, Any]:
        return output_files(self.ref_audited)

    @functools.cached_property
    def ref_pruned(self) -> Path:
        """The audited reference after ``regdpo prune`` (``self.t_prune``: its time)."""
        path = self.work / "ref" / "pruned"
        KNOWN_ROOTS.append(str(path))
        shutil.copytree(self.ref_audited, path, symlinks=True)
        t = time.monotonic()
        self._ref_run(REG + ["prune", str(path)])
        self.t_prune = time.monotonic() - t
        return path

    @functools.cached_property
    def pruned_files(self) -> dict[str, Any]:
        return output_files(self.ref_pruned)

    @staticmethod
    def _ref_run(cmd: list[str]) -> None:
        proc = subprocess.run(cmd, env=env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"reference run failed ({' '.join(cmd)}): {proc.stderr[-2000:]}")

    def _probe_tmpfs(self) -> str:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            return "needs root and mount(8) for a small tmpfs"
        probe = self.work / "tmpfs-probe"
        probe.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            return f"mount -t tmpfs failed: {proc.stderr.strip()}"
        subprocess.run(["umount", str(probe)], check=True)
        probe.rmdir()
        return ""

    # -- case list, deterministic given the seed
    KINDS = ("generate", "resume", "overwrite", "manifest_concurrent", "manifest_kill", "shards", "prune",
             "select", "disk_tmpfs", "ulimit_f", "symlink", "traversal",
             "special_source", "special_dataset", "preview_disk", "manifest_startup", "launch_kill", "hostile_json")
    WEIGHTS = (12, 7, 10, 8, 6, 10, 5, 3, 9, 8, 12, 10, 8, 14, 5, 5, 5, 14)
    SPECIAL_KINDS = ("fifo", "socket", "device", "self_link", "link_loop")
    SPECIAL_PLACES = ("gt_frame", "mask_frame", "neg_frame", "meta_json", "checksums", "manifest_json", "audit_json",
                      "selection", "failed_record")
    SPECIAL_COMMANDS = ("audit", "verify", "preview", "dataset", "dataset_skip", "gen_resume", "manifest", "select",
                        "prune")
    LINK_PLACES = ("video_dir", "stream_dir", "gt_frame", "meta_json", "checksums", "manifest_json", "lock",
                   "lock_manifest", "staging", "staging_shard", "preview_dir", "preview_file", "failed_dir",
                   "audit_json", "selection", "prune_report")
    LINK_COMMANDS = ("gen_resume", "gen_overwrite", "gen_shard", "manifest", "audit", "preview", "verify", "select",
                     "prune", "dataset")
    NAME_FILES = ("manifest.json", "meta.json", "selection.json", "audit.json", "manifest.selected.json",
                  "failed_record")
    NAME_COMMANDS = ("dataset", "audit", "preview", "verify", "manifest", "select", "prune", "gen_resume")

    def draw(self, kind: str) -> dict[str, Any]:
        r = self.rng
        sig = r.choices(("KILL", "TERM", "INT"), (5, 3, 2))[0]
        if kind in ("generate", "resume", "overwrite"):
            return {"signal": sig, "delay": round(r.uniform(0.05, 1.1) , 3),
                    "recover": r.choice(("--resume", "--overwrite")) if kind == "overwrite" else "--resume",
                    "foreign": kind == "overwrite" and r.random() < 0.15}
        if kind == "manifest_concurrent":
            return {"shards": r.random() < 0.4, "gen_signal": r.choice((None, "KILL", "TERM")),
                    "gen_delay": round(r.uniform(0.2, 1.0), 3), "manifest_kill_p": 0.3, "sub_seed": r.randrange(10**6)}
        if kind == "manifest_kill":
            return {"signal": sig, "delay": round(r.uniform(0.0, 1.2), 3), "partial": r.random() < 0.6,
                    "gen_delay": round(r.uniform(0.3, 0.9), 3)}
        if kind == "shards":
            return {"signal": sig, "which": r.choice(([0], [1], [0, 1])), "delay": round(r.uniform(0.05, 1.1), 3),
                    "delay2": round(r.uniform(0.05, 1.1), 3)}
        if kind in ("prune", "select"):
            return {"signal": sig, "delay": round(r.uniform(0.0, 1.2), 3)}
        if kind == "disk_tmpfs":
            what = r.choices(("generate", "overwrite", "manifest", "audit", "preview", "select"), (6, 2, 1, 1, 1, 1))[0]
            return {"what": what, "size_frac": round(r.uniform(0.02, 1.05), 3),
                    "free": r.choice(("remount", "copy")) if what in ("generate", "overwrite") else "remove filler"}
        if kind == "ulimit_f":
            what = r.choices(("generate", "overwrite", "manifest", "audit", "select"), (6, 2, 2, 1, 1))[0]
            return {"what": what, "limit": int(r.uniform(1, 60) * 1024) if what != "generate" or r.random() < 0.5
                    else int(r.uniform(60, 200) * 1024)}
        if kind == "symlink":
            return {"place": r.choice(self.LINK_PLACES), "command": r.choice(self.LINK_COMMANDS),
                    "dangling": r.random() < 0.3, "video": r.choice(self.videos)}
        if kind == "special_source":
            return {"special": r.choice(self.SPECIAL_KINDS), "where": r.choice(("frame", "video_file", "both"))}
        if kind == "special_dataset":
            return {"special": r.choice(self.SPECIAL_KINDS), "place": r.choice(self.SPECIAL_PLACES),
                    "command": r.choice(self.SPECIAL_COMMANDS), "video": r.choice(self.videos)}
        if kind == "preview_disk":
            return {"how": r.choice(("ulimit_f", "tmpfs")), "limit_kib": int(r.uniform(1, 120)),
                    "gif": r.random() < 0.3}
        if kind == "manifest_startup":
            return {"delay": round(r.uniform(0.0, 0.4), 3), "signal": r.choice(("INT", "INT", "TERM"))}
        if kind == "launch_kill":
            return {"delay": round(r.uniform(0.05, 0.6), 3)}
        if kind == "hostile_json":
            file = r.choice(sorted(JSON_COMMANDS))
            hostility = r.choice(HOSTILITIES + ("wrong_type",) * 3)
            if hostility == "too_large" and file not in ("meta_json", "failed_record"):
                hostility = "deep_40"  # (an index's limit is 1 GiB: not written per case)
            params = {"file": file, "hostility": hostility, "command": r.choice(JSON_COMMANDS[file]),
                      "video": r.choice(self.videos)}
            if hostility == "wrong_type":
                params["field"] = r.choice(sorted(WRONG_TYPES[file]))
            return params
        if kind == "traversal":
            return {"file": r.choice(self.NAME_FILES), "name": r.choice(BAD_NAMES), "command": r.choice(self.NAME_COMMANDS),
                    "video": r.choice(self.videos)}
        raise ValueError(kind)

    def case_list(self, n: int, quick: bool, kinds: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
        if quick:  # one case of each kind; hostile JSON: one per file kind
            out = []
            for k in kinds:
                if k != "hostile_json":
                    out.append((k, self.draw(k)))
                    continue
                for file in sorted(JSON_COMMANDS):
                    while (drawn := self.draw(k))["file"] != file:
                        pass
                    out.append((k, drawn))
            return out
        weights = [w for k, w in zip(self.KINDS, self.WEIGHTS) if k in kinds]
        return [(k, self.draw(k)) for k in self.rng.choices(kinds, weights, k=n)]

    # -- running a case
    def run_case(self, index: int, kind: str, params: dict[str, Any]) -> Case:
        case = Case(kind, params, self.work / f"case{index:04d}")
        (case.dir / "a").mkdir(parents=True)
        self._decoys(case)
        case.snapshot_outside()
        try:
            getattr(self, f"case_{kind}")(case, **params)
        except SkipCase as exc:
            case.skipped = str(exc)
        except Exception as exc:  # the campaign's own failure: reported, the campaign goes on
            case.problems.append(f"campaign error: {type(exc).__name__}: {exc}")
        finally:
            self._unmount(case)
        if not case.skipped:
            case.check_outside()
        return case

    def _decoys(self, case: Case) -> None:
        """A sentinel folder (files named like the dataset's) and two real video folders outside the dataset."""
        s = case.dir / "sentinel"
        (s / "sub").mkdir(parents=True)
        video = self.ref / self.videos[0]
        for name, data in (("meta.json", (video / META).read_bytes()), ("manifest.json", (self.ref / "manifest.json").read_bytes()),
                           (".lock", b""), ("00000.png", (video / "gt_frames" / "00000.png").read_bytes()),
                           ("checksums.sha256", (video / "checksums.sha256").read_bytes()), ("x.mp4", b"not a video"),
                           ("audit.json", b"{}"), ("sub/keep.txt", b"keep")):
            (s / name).write_bytes(data)
        for where in (case.dir / "outside_vid", case.dir / "a" / "outside_vid"):
            shutil.copytree(video, where)

    def _copy(self, src: Path, dst: Path) -> None:
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, symlinks=True)

    # ---- kill classes
    def case_generate(self, c: Case, signal, delay, recover, foreign):
        c.run(GEN + gen_flags(c.out), "generate", fault=(signal, delay * self.t_gen))
        c.run(GEN + gen_flags(c.out, "--resume"), "resume")
        c.check_dataset(self.ref_files)

    def case_resume(self, c: Case, signal, delay, recover, foreign):
        c.run(GEN + gen_flags(c.out), "generate", fault=("KILL", 0.3 * self.t_gen + 0.3))
        c.run(GEN + gen_flags(c.out, "--resume"), "resume (faulted)", fault=(signal, delay * self.t_gen))
        c.run(GEN + gen_flags(c.out, "--resume"), "resume")
        c.check_dataset(self.ref_files)

    def case_overwrite(self, c: Case, signal, delay, recover, foreign):
        self._copy(self.ref, c.out)
        expected = self.ref_files
        if foreign:  # a user's own split inside the output folder: --overwrite must refuse, delete nothing
            (c.out / "train").mkdir()
            (c.out / "train" / META).write_text('{"videos": {}}')
            (c.out / "train" / "00000.jpg").write_bytes(b"user data")
            expected = output_files(c.out)
            c.run(GEN + gen_flags(c.out, "--overwrite"), "overwrite (foreign data)", expect={1, 2})
            c.check_dataset(expected, verify=False)
            c.run(REG + ["verify", str(c.out)], "verify (reports the foreign train/)", expect={1})
            return
        c.run(GEN + gen_flags(c.out, "--overwrite"), "overwrite (faulted)", fault=(signal, delay * self.t_gen))
        c.run(GEN + gen_flags(c.out, recover), recover.strip("-"))
        c.check_dataset(expected)

    def case_manifest_concurrent(self, c: Case, shards, gen_signal, gen_delay, manifest_kill_p, sub_seed):
        r = random.Random(sub_seed)
        commands = ([GEN + gen_flags(c.out, "--num_shards", "2", "--shard_index", str(k)) for k in (0, 1)] if shards
                    else [GEN + gen_flags(c.out)])
        procs = [c.start(cmd) for cmd in commands]
        t0 = time.monotonic()
        signalled = False
        loops = 0
        while any(p.poll() is None for p in procs) and time.monotonic() - t0 < 300:
            if gen_signal and not signalled and time.monotonic() - t0 > gen_delay * self.t_gen:
                for p in procs:
                    if running(p):
                        os.kill(p.pid, SIGNALS[gen_signal])
                        c.landed = True
                signalled = True
            existed = c.out.is_dir()
            m = c.start(REG + ["manifest", str(c.out)])
            fault = (r.choice(("KILL", "TERM", "INT")), r.uniform(0, 1.2) * self.t_manifest) \
                if r.random() < manifest_kill_p else None
            c.finish(m, f"manifest #{loops}", {0} if existed else {0, 1, 2}, fault=fault)
            loops += 1
        expect = {0} if not signalled else {0, *EXPECTED_AFTER[gen_signal]}
        for k, p in enumerate(procs):
            c.finish(p, f"generator {k}", expect)
        c.params["manifest_runs"] = loops
        c.run(GEN + gen_flags(c.out, "--resume"), "resume")
        c.check_dataset(self.ref_files)

    def case_manifest_kill(self, c: Case, signal, delay, partial, gen_delay):
        if partial:  # a killed generator's dataset: staging leftovers, no manifest
            c.run(GEN + gen_flags(c.out), "generate (killed)", fault=("KILL", gen_delay * self.t_gen))
            c.out.mkdir(parents=True, exist_ok=True)
        else:
            self._copy(self.ref, c.out)
        c.run(REG + ["manifest", str(c.out)], "manifest (faulted)", fault=(signal, delay * self.t_manifest))
        c.run(REG + ["manifest", str(c.out)], "manifest")
        if partial:
            c.run(GEN + gen_flags(c.out, "--resume"), "resume")
        c.check_dataset(self.ref_files)

    def case_shards(self, c: Case, signal, which, delay, delay2):
        procs = {k: c.start(GEN + gen_flags(c.out, "--num_shards", "2", "--shard_index", str(k))) for k in (0, 1)}
        delays = {which[0]: delay, which[-1]: delay2} if len(which) == 2 else {which[0]: delay}
        t0 = time.monotonic()
        for k in sorted(procs, key=lambda k: delays.get(k, 1e9)):
            fault = None
            if k in delays:
                fault = (signal, max(0.0, delays[k] * self.t_gen - (time.monotonic() - t0)))
            c.finish(procs[k], f"shard {k}" + (" (faulted)" if fault else ""), {0}, fault=fault)
        for k in which:
            c.run(GEN + gen_flags(c.out, "--num_shards", "2", "--shard_index", str(k)), f"shard {k} rerun")
        c.check_dataset(self.ref_files)

    def case_prune(self, c: Case, signal, delay):
        self._copy(self.ref_audited, c.out)
        self.pruned_files  # noqa: B018 (the reference, and its time, before the faulted run)
        c.run(REG + ["prune", str(c.out)], "prune (faulted)", fault=(signal, delay * self.t_prune))
        c.run(REG + ["prune", str(c.out)], "prune")
        c.check_dataset(self.pruned_files, exclude=("prune.json",))

    def case_select(self, c: Case, signal, delay):
        self._copy(self.ref_audited, c.out)
        for name in ("selection.json", "manifest.selected.json"):
            (c.out / name).unlink()
        c.run(REG + ["select", str(c.out)], "select (faulted)", fault=(signal, delay * self.t_select))
        c.run(REG + ["select", str(c.out)], "select")
        c.check_dataset(self.audited_files)

    # ---- full disks
    def _mount(self, c: Case, path: Path, size: int) -> None:
        if self.tmpfs_reason:
            raise SkipCase(self.tmpfs_reason)
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={max(size, 4096)}", "tmpfs", str(path)], check=True)
        c.params.setdefault("mounted", []).append(str(path))

    def _unmount(self, c: Case) -> None:
        for path in reversed(c.params.pop("mounted", [])):
            subprocess.run(["umount", "-l", path], capture_output=True)

    def _no_temp_files(self, c: Case, root: Path) -> None:
        temps = [str(p.relative_to(root)) for p in root.rglob("*.tmp*") if p.is_file()]
        zero = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.stat().st_size == 0
                and not p.name.startswith(LOCK)]
        if temps or zero:
            c.problems.append(f"after the full disk: temporary files {temps[:5]}, 0-byte files {zero[:5]}")

    @staticmethod
    def _fill(path: Path) -> None:
        """Write ``path`` until the disk is full (unbuffered, so every byte that fits is written)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for block in (1 << 20, 1 << 16, 4096, 512, 1):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * block)
        finally:
            os.close(fd)

    def case_disk_tmpfs(self, c: Case, what, size_frac, free):
        size = int(self.ref_bytes * size_frac)
        if what in ("generate", "overwrite"):
            filler = c.out.parent / "_filler"  # on the mounted disk only when the disk is mounted at a/
            if what == "overwrite":  # a disk holding the dataset and another file, with less room than a new run needs
                self._mount(c, c.out.parent, int(self.ref_bytes * 1.1))
                shutil.copytree(self.ref, c.out, symlinks=True)
                proc = c.start(GEN + gen_flags(c.out, "--overwrite"))
                time.sleep(size_frac * self.t_gen)  # then another writer fills the disk while --overwrite works
                self._fill(filler)
                c.finish(proc, "overwrite (disk filled meanwhile)", {0, 1})
            else:
                self._mount(c, c.out, size)
                c.run(GEN + gen_flags(c.out), "generate (full disk)", expect={0, 1})
            self._no_temp_files(c, c.out)
            filler.unlink(missing_ok=True)
            if free == "remount":
                subprocess.run(["mount", "-o", "remount,size=512m", c.params["mounted"][-1]], check=True)
                c.run(GEN + gen_flags(c.out, "--resume"), "resume")
                c.check_dataset(self.ref_files)
            else:  # copied to a larger disk, resumed there
                bigger = c.dir / "a" / "out"
                moved = c.dir / "full"
                self._unmount_keep(c, c.out, moved)
                c.run(GEN + gen_flags(bigger, "--resume"), "resume (copy)")
                c.check_dataset(self.ref_files, root=bigger)
            return
        # a finished dataset on a disk filled to the last byte: the command fails cleanly, then works
        self._mount(c, c.out, int(self.ref_bytes * 1.5) + (1 << 20))
        self._copy_into(self.ref_audited, c.out)
        self._remove_outputs_of(c, what)
        self._fill(c.out / "_filler")
        cmd = REG + [what, str(c.out)]
        c.run(cmd, f"{what} (full disk)", expect={0, 1})
        (c.out / "_filler").unlink()
        self._no_temp_files(c, c.out)
        c.run(cmd, what)
        c.check_dataset(self.audited_files, exclude=DERIVED_REPORTS)

    @staticmethod
    def _remove_outputs_of(c: Case, command: str) -> None:
        """Remove what ``command`` writes in the dataset, so that the faulted run has to write it."""
        names = {"select": ("selection.json", "manifest.selected.json"), "manifest": ("manifest.json",),
                 "audit": ("audit.json", "audit.html")}.get(command, ())
        for name in names:
            (c.out / name).unlink()

    def _copy_into(self, src: Path, dst: Path) -> None:
        for p in src.iterdir():
            (shutil.copytree(p, dst / p.name, symlinks=True) if p.is_dir() else shutil.copy2(p, dst / p.name))

    def _unmount_keep(self, c: Case, mount: Path, keep: Path) -> None:
        """Copy the full disk's content to ``mount`` on the ordinary disk (the 'copy to a larger disk' way)."""
        shutil.copytree(mount, keep, symlinks=True)
        self._unmount(c)
        mount.rmdir() if mount.exists() and not any(mount.iterdir()) else None
        shutil.copytree(keep, mount, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(keep)

    def case_ulimit_f(self, c: Case, what, limit):
        def preexec():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        if what in ("generate", "overwrite"):
            if what == "overwrite":
                self._copy(self.ref, c.out)
            extra = ["--overwrite"] if what == "overwrite" else []
            c.run(GEN + gen_flags(c.out, *extra), f"{what} (ulimit -f {limit // 1024} KiB)", expect={0, 1},
                  preexec=preexec)
            self._no_temp_files(c, c.out) if c.out.is_dir() else None
            c.run(GEN + gen_flags(c.out, "--resume"), "resume")
            c.check_dataset(self.ref_files)
            return
        self._copy(self.ref_audited, c.out)
        self._remove_outputs_of(c, what)
        c.run(REG + [what, str(c.out)], f"{what} (ulimit -f {limit // 1024} KiB)", expect={0, 1}, preexec=preexec)
        self._no_temp_files(c, c.out)
        c.run(REG + [what, str(c.out)], what)
        c.check_dataset(self.audited_files, exclude=DERIVED_REPORTS)

    # ---- planted links
    def _command(self, c: Case, command: str, label: str, expect: set[int], timeout: float = 300) -> int:
        cmds = {"gen_resume": GEN + gen_flags(c.out, "--resume"), "gen_overwrite": GEN + gen_flags(c.out, "--overwrite"),
                "gen_shard": GEN + gen_flags(c.out, "--num_shards", "2", "--shard_index", "0"),
                "dataset": [sys.executable, "-c", DATASET_SCRIPT, str(c.out)],
                "dataset_skip": [sys.executable, "-c", DATASET_SCRIPT, str(c.out), "skip_invalid"]}
        cmd = cmds.get(command) or REG + [command, str(c.out)]
        return c.run(cmd, label, expect=expect, timeout=timeout)

    def case_symlink(self, c: Case, place, command, dangling, video):
        self._copy(self.ref_audited, c.out)
        s = c.dir / "sentinel"
        v = c.out / video
        removed_videos = []
        if command in ("gen_resume", "gen_shard"):  # some videos to make, so the generator writes
            removed_videos = [n for n in self.videos if n != video][::3]
            for n in removed_videos:
                shutil.rmtree(c.out / n)
        target = {"video_dir": (v, s), "stream_dir": (v / "blur", s), "gt_frame": (v / "gt_frames" / "00000.png", s / "00000.png"),
                  "meta_json": (v / META, s / "meta.json"), "checksums": (v / "checksums.sha256", s / "checksums.sha256"),
                  "manifest_json": (c.out / "manifest.json", s / "manifest.json"), "lock": (c.out / LOCK, s / ".lock"),
                  "lock_manifest": (c.out / ".lock.manifest", s / ".lock"), "staging": (c.out / ".staging", s),
                  "staging_shard": (c.out / ".staging" / "shard-0-of-2", s), "preview_dir": (c.out / "_preview", s),
                  "preview_file": (c.out / "_preview" / f"{video}.mp4", s / "x.mp4"), "failed_dir": (c.out / "_failed", s),
                  "audit_json": (c.out / "audit.json", s / "audit.json"),
                  "selection": (c.out / "manifest.selected.json", s / "audit.json"),
                  "prune_report": (c.out / "prune.json", s / "audit.json")}[place]
        link, to = target
        if dangling:
            to = s / "sub" / "new_file"
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        elif link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(to, target_is_directory=to.is_dir())
        self._command(c, command, f"{command} (link at {place})", {0, 1, 2})
        # recover: remove the link, restore what it replaced (a video folder: --resume makes it), redo the command
        if link.is_symlink():
            link.unlink()
        if place == "video_dir" and command in ("gen_resume", "gen_shard", "gen_overwrite"):
            shutil.rmtree(link, ignore_errors=True)  # a video made in the link's place: made again anyway
            self._recover(c, command)
            return
        for sub in (".staging",):
            if (c.out / sub).is_dir() and not any((c.out / sub).iterdir()):
                (c.out / sub).rmdir()
        rel = link.relative_to(c.out)
        src = self.ref_audited / rel
        if src.is_dir():
            if link.exists():
                shutil.rmtree(link)
            shutil.copytree(src, link, symlinks=True)
        elif src.is_file():
            shutil.copy2(src, link)
        self._recover(c, command)

    def _recover(self, c: Case, command: str) -> None:
        if command in ("gen_resume", "gen_shard"):
            c.run(GEN + gen_flags(c.out, "--resume"), "resume")
            c.check_dataset(self.audited_files)
        elif command == "gen_overwrite":
            c.run(GEN + gen_flags(c.out, "--overwrite"), "overwrite")
            c.check_dataset(self.ref_files)
        elif command == "prune":
            c.run(REG + ["prune", str(c.out)], "prune")
            c.check_dataset(self.pruned_files, exclude=("prune.json",))
        else:
            if command not in ("dataset", "dataset_skip"):
                c.run(REG + [command, str(c.out)], command)
            c.check_dataset(self.audited_files, exclude=DERIVED_REPORTS)

    # ---- traversal names
    def case_traversal(self, c: Case, file, name, command, video):
        self._copy(self.ref_audited, c.out)
        bad = name.replace("{case}", str(c.dir))
        path = {"manifest.json": c.out / "manifest.json", "meta.json": c.out / video / META,
                "selection.json": c.out / "selection.json", "audit.json": c.out / "audit.json",
                "manifest.selected.json": c.out / "manifest.selected.json",
                "failed_record": c.out / "_failed" / f"{video}.json"}[file]
        if file == "failed_record":
            shutil.rmtree(c.out / video)
            path.parent.mkdir()
            data: Any = {"name": bad, "status": "failed", "reason": "x", "attempts": 1}
        else:
            data = json.loads(path.read_text())
            if file == "meta.json":
                data["name"] = bad
            elif file in ("manifest.json", "manifest.selected.json"):
                entry = next((e for e in data["videos"] if e["name"] == video), data["videos"][0])
                entry["name"] = bad
            elif file == "selection.json":
                data["considered"] = [bad if v == video else v for v in data["considered"]]
                for p in data["picks"]:
                    p["video"] = bad if p["video"] == video else p["video"]
            else:
                for item in data["items"]:
                    item["video"] = bad if item["video"] == video else item["video"]
        path.write_text(json.dumps(data))
        self._command(c, command, f"{command} ({file} name {bad!r})", {0, 1, 2})
        if command == "dataset" and c.runs[-1]["rc"] == 0:
            loaded = json.loads((c.runs[-1]["stdout"].strip().splitlines() or ["[]"])[-1])
            if bad in loaded:
                c.outside.append(f"DPODataset loaded the video named {bad!r}")
        # recover: restore the file, redo the command
        if file == "failed_record":
            path.unlink()
            if not any(path.parent.iterdir()):
                path.parent.rmdir()
            shutil.copytree(self.ref_audited / video, c.out / video)
        else:
            shutil.copy2(self.ref_audited / path.relative_to(c.out), path)
        self._recover(c, command)


    # ---- hostile JSON (issue 18): deep, huge, non-finite, wrong-typed JSON files under every reader
    def case_hostile_json(self, c: Case, file, hostility, command, video, field=None):
        """A JSON file the readers use made hostile (nested 100000 deep or past the loader's 32, a 5000-digit
        integer, NaN, larger than its kind's limit, not UTF-8, cut, not an object, a field of the wrong type):
        the command ends with no traceback (verify: exit 1, naming the file; the others 0 or 1, one bad video's
        record failing that video alone); then the file is restored and the command run again."""
        self._copy(self.ref_audited, c.out)
        path = {"meta_json": c.out / video / META, "failed_record": c.out / "_failed" / f"{video}.json",
                "manifest_json": c.out / "manifest.json", "manifest_selected": c.out / "manifest.selected.json",
                "audit_json": c.out / "audit.json", "selection": c.out / "selection.json",
                "score_json": c.out / "score.json"}[file]
        if file == "failed_record":  # a video still to make, with a (hostile) record of an earlier failure
            shutil.rmtree(c.out / video)
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps({"name": video, "status": "failed", "reason": "RuntimeError: x",
                                        "attempts": 1, "dataset": "davis", "path": "x"}))
        elif file == "score_json":
            path.write_text(json.dumps({"items": [{"video": video, "stream": "blur", "ref_margin": 0.5}]}))
        text = path.read_text()
        if hostility == "wrong_type":
            data = json.loads(text)
            keys, value = WRONG_TYPES[file][field]
            target = data
            for key in keys[:-1]:
                target = target[key]
            target[keys[-1]] = value
            made: Any = json.dumps(data)
        else:
            made = hostile_text(text, hostility)
        path.write_bytes(made if isinstance(made, bytes) else made.encode())
        label = f"{command} ({file} {hostility}{' ' + field if field else ''})"
        expect = {1} if command == "verify" else {0, 1}
        self._command(c, command, label, expect, timeout=120)
        if command == "verify" and str(path) not in c.runs[-1]["stdout"]:
            c.problems.append(f"{label}: verify did not name {path}: {c.runs[-1]['stdout'][-300:]}")
        if command == "manifest" and file == "meta_json":  # passed over: the others listed, it under failed
            listed = [v["name"] for v in json.loads((c.out / "manifest.json").read_text())["videos"]]
            if video in listed or len(listed) != len(self.videos) - 1:
                c.problems.append(f"{label}: the manifest lists {len(listed)} videos ({video} in it: {video in listed})")
        # recover: the file as it was (or gone), the video back, the command again
        if file in ("failed_record", "score_json"):
            path.unlink(missing_ok=True)
            if file == "failed_record" and path.parent.is_dir() and not any(path.parent.iterdir()):
                path.parent.rmdir()
            if file == "failed_record" and not (c.out / video).exists():
                shutil.copytree(self.ref_audited / video, c.out / video)
        else:
            shutil.copy2(self.ref_audited / path.relative_to(c.out), path)
        self._recover(c, command)

    # ---- special files (issue 18): a FIFO, socket, device, link loop where a frame, video or JSON file belongs
    @functools.cached_property
    def special_src(self) -> Path:
        """A clean ``--video_root``: two frame folders (copies of the DAVIS fixtures) and an MJPG video file."""
        import cv2

        root = self.work / "ref" / "special_src"
        for name, seq in (("tennis", "tennis"), ("bmx", "bmx-trees")):
            shutil.copytree(DATA / "DAVIS" / "JPEGImages" / "480p" / seq, root / name)
        frames = sorted((root / "bmx").iterdir())
        writer = cv2.VideoWriter(str(root / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 24.0, (320, 180))
        for f in frames:
            writer.write(cv2.resize(cv2.imread(str(f)), (320, 180), interpolation=cv2.INTER_AREA))
        writer.release()
        return root

    @staticmethod
    def special_flags(root: Path, out: Path) -> list[str]:
        return ["--video_root", str(root), "--output_dir", str(out), "--nframes", "12", "--resolution", "128",
                "--seed", "5", "--assumed_fps", "24", "--no_progress"]

    def special_root(self) -> Path:
        """A fresh copy of ``special_src`` at one fixed path (``meta.json`` records the source's path, so the
        reference and every case read their sources there)."""
        root = self.work / "special_root"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(self.special_src, root)
        return root

    @functools.cached_property
    def special_files(self) -> dict[str, Any]:
        """The uninterrupted run on ``special_src``."""
        out = self.work / "ref" / "special"
        KNOWN_ROOTS.append(str(out))
        self._ref_run(GEN + self.special_flags(self.special_root(), out))
        return output_files(out)

    def case_special_source(self, c: Case, special, where):
        """A special file named like a frame (in a frame folder) or like a video file in --video_root: the run
        ends, the good video is written, each bad one is recorded as failed with one line; repaired, --resume."""
        self.special_files  # noqa: B018 (the reference first)
        root = self.special_root()  # outside the case folder (whose content outside the dataset must not change)
        planted = []
        if where in ("frame", "both"):  # a frame the clip reads (the reference's meta.json says which)
            used = json.loads((self.work / "ref" / "special" / "video_bmx" / META).read_text())["source"]
            planted.append((root / "bmx" / f"{used['source_frames'][3]}.jpg", "video_bmx"))
        if where in ("video_file", "both"):
            planted.append((root / "clip.avi", "video_clip"))
        for path, _ in planted:
            path.unlink()
            make_special(path, special)
        flags = self.special_flags(root, c.out)
        c.run(GEN + flags, f"generate ({special} as {where})", expect={1}, timeout=120)
        stdout = c.runs[-1]["stdout"]
        for path, name in planted:
            if not (c.out / "_failed" / f"{name}.json").is_file():
                c.problems.append(f"{name} ({special} at {path.name}) not recorded as failed")
            lines = [l for l in stdout.splitlines() if l.strip().startswith(f"FAILED {name}:")]
            if len(lines) != 1:
                c.problems.append(f"{name}: {len(lines)} FAILED lines, expected one: {stdout[-500:]}")
        if not (c.out / "video_tennis" / META).is_file():
            c.problems.append("the good video was not written")
        for path, _ in planted:  # repaired: the real file back, --resume makes the failed videos
            remove_special(path)
            shutil.copy2(self.special_src / path.relative_to(root), path)
        c.run(GEN + flags + ["--resume"], "resume")
        c.check_dataset(self.special_files)

    def case_special_dataset(self, c: Case, special, place, command, video):
        """A special file where a finished dataset holds a frame or a JSON file, under a reader: it ends (no
        hang, no traceback); then the file is restored and the command run again."""
        self._copy(self.ref_audited, c.out)
        v = c.out / video
        neg = next(s for s in sorted(p.name for p in v.iterdir() if p.is_dir()) if s not in ("gt_frames", "masks"))
        path = {"gt_frame": v / "gt_frames" / "00001.png", "mask_frame": v / "masks" / "00000.png",
                "neg_frame": v / neg / "00002.png", "meta_json": v / META, "checksums": v / "checksums.sha256",
                "manifest_json": c.out / "manifest.json", "audit_json": c.out / "audit.json",
                "selection": c.out / "manifest.selected.json",
                "failed_record": c.out / "_failed" / f"{video}.json"}[place]
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            path.unlink()
        make_special(path, special)
        self._command(c, command, f"{command} ({special} at {place})", {0, 1, 2}, timeout=120)
        remove_special(path)
        original = self.ref_audited / path.relative_to(c.out)
        if original.is_file():
            shutil.copy2(original, path)
        elif not any(path.parent.iterdir()):
            path.parent.rmdir()
        self._recover(c, command)

    def case_preview_disk(self, c: Case, how, limit_kib, gif):
        """`regdpo preview` on a full disk (a small tmpfs as _preview/) or under `ulimit -f`: one line naming the
        file, exit 1, no temporary left; then it works."""
        self._copy(self.ref_audited, c.out)
        cmd = REG + ["preview", str(c.out)] + (["--gif"] if gif else [])
        preexec = None
        if how == "tmpfs":
            self._mount(c, c.out / "_preview", limit_kib * 1024)
        else:
            def preexec():
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit_kib * 1024, limit_kib * 1024))
        rc = c.run(cmd, f"preview ({how} {limit_kib} KiB)", expect={0, 1}, preexec=preexec)
        last = (c.runs[-1]["stderr_tail"].strip().splitlines() or [""])[-1]
        if rc == 1 and not (last.startswith(f"regdpo preview: error: {c.out / '_preview'}/")
                            and last.endswith((": File too large", ": No space left on device"))):
            c.problems.append(f"preview on a full disk: last line {last!r}")
        self._no_temp_files(c, c.out)
        if how == "tmpfs":
            subprocess.run(["mount", "-o", "remount,size=256m", c.params["mounted"][-1]], check=True)
        c.run(cmd, "preview")
        c.check_dataset(self.audited_files, exclude=DERIVED_REPORTS)

    def case_manifest_startup(self, c: Case, delay, signal):
        """Ctrl-C (or SIGTERM) while `regdpo manifest` is still starting (its modules loading)."""
        self._copy(self.ref, c.out)
        c.run(REG + ["manifest", str(c.out)], f"manifest ({signal} at {delay} s)", fault=(signal, delay))
        c.run(REG + ["manifest", str(c.out)], "manifest")
        c.check_dataset(self.ref_files)

    def case_launch_kill(self, c: Case, delay):
        """`regdpo launch` (two CPU workers) killed with -9: its workers must stop with it; then --resume."""
        cmd = REG + ["launch", "--gpus", "0,1", "--no_progress", "--"] + gen_flags(c.out)
        c.finish(c.start(cmd), "launch (kill -9)", {0}, fault=("KILL", delay * self.t_gen))
        deadline = time.monotonic() + 15
        while generators_writing_into(c.out) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = generators_writing_into(c.out)
        if left:
            c.problems.append(f"{len(left)} worker(s) still running 15 s after the launcher was killed with -9")
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        c.run(cmd + ["--resume"], "relaunch --resume")
        c.check_dataset(self.ref_files, exclude=("_logs",))


def make_special(path: Path, special: str) -> None:
    """A named pipe, a socket, a link to a character device, a link to itself or a two-link loop at ``path``."""
    if special == "fifo":
        os.mkfifo(path)
    elif special == "socket":
        import socket

        cwd = os.getcwd()
        os.chdir(path.parent)  # a socket's path is limited to ~100 bytes: bound by its name
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(path.name)
        finally:
            os.chdir(cwd)
    elif special == "device":
        path.symlink_to("/dev/zero")
    elif special == "self_link":
        path.symlink_to(path.name)
    else:
        path.with_name(path.name + ".loop").symlink_to(path.name)
        path.symlink_to(path.name + ".loop")


def remove_special(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".loop")):
        if p.exists() or p.is_symlink() or os.path.lexists(p):
            p.unlink()


def generators_writing_into(out: Path) -> list[int]:
    """Pids of the `regdpo generate` processes whose command line names ``out`` (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"generate" in argv and os.fsencode(str(out)) in argv:
                pids.append(int(entry.name))
    return pids


class SkipCase(Exception):
    """A case that cannot run here (no tmpfs): counted apart, never as survived."""


def summarise(cases: list[Case]) -> dict[str, Any]:
    def figures(cs: list[Case]) -> dict[str, int]:
        ran = [c for c in cs if not c.skipped]
        return {"cases": len(ran), "survived": sum(c.survived for c in ran),
                "fault_landed": sum(c.landed for c in ran),
                "lost": sum(bool(c.lost or c.different) for c in ran),
                "files_lost_or_different": sum(len(c.lost) + len(c.different) for c in ran),
                "stray_files": sum(bool(c.extra) for c in ran),
                "written_outside": sum(bool(c.outside) for c in ran),
                "tracebacks": sum(bool(c.tracebacks) for c in ran),
                "bad_exit": sum(bool(c.bad_exit) for c in ran),
                "other_problems": sum(bool(c.problems) for c in ran),
                "interpreter_startup_interrupts": sum(c.startup_interrupts for c in ran),
                "skipped": len(cs) - len(ran)}

    kinds = sorted({c.cls for c in cases})
    return {"per_class": {k: figures([c for c in cases if c.cls == k]) for k in kinds}, "total": figures(cases)}


def main(argv: list[str] | None = None) -> int:
    global DATA
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200, help="number of cases (default 200)")
    parser.add_argument("--quick", action="store_true", help="one case of each kind (a minute or two)")
    parser.add_argument("--seed", type=int, default=0, help="draws the case list and fault times (default 0)")
    parser.add_argument("--kinds", nargs="+", choices=Campaign.KINDS, default=list(Campaign.KINDS),
                        help="only these kinds of case")
    parser.add_argument("--json", metavar="FILE", help="also write the summary and every case's record here")
    parser.add_argument("--workdir", help="where the cases run (default: a temporary folder, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the case folders of failed cases")
    parser.add_argument("--data", type=Path, default=None, help=f"the fixtures (default: {DATA})")
    args = parser.parse_args(argv)
    if args.data is not None:
        DATA = args.data.resolve()
    if not DATA.is_dir():
        print(f"fault campaign: the real-video fixtures are not at {DATA}", file=sys.stderr)
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="regdpo-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    camp = Campaign(work, args.seed)
    started = time.time()
    load = os.getloadavg()[0]
    camp.build_references()
    specs = camp.case_list(args.cases, args.quick, tuple(args.kinds))
    print(f"fault campaign: {len(specs)} cases, seed {args.seed}; reference run {camp.t_gen:.1f} s "
          f"({len(camp.videos)} videos, {len(camp.ref_files)} files); load average {load:.2f}"
          + (f"; tmpfs cases skipped: {camp.tmpfs_reason}" if camp.tmpfs_reason else ""), flush=True)
    cases = []
    try:
        for i, (kind, params) in enumerate(specs):
            case = camp.run_case(i, kind, dict(params))
            cases.append(case)
            verdict = "skipped" if case.skipped else "survived" if case.survived else "FAILED"
            print(f"[{i + 1}/{len(specs)}] {kind} {json.dumps(params, default=str)[:150]}: {verdict}", flush=True)
            if not case.survived and not case.skipped:
                for what in ("lost", "different", "extra", "outside", "tracebacks", "bad_exit", "problems"):
                    if getattr(case, what):
                        print(f"    {what}: {getattr(case, what)[:4]}", flush=True)
            if case.survived or case.skipped or not args.keep:
                shutil.rmtree(case.dir, ignore_errors=True)
    finally:
        summary = summarise(cases)
        summary.update({"seed": args.seed, "quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                        "wall_s": round(time.time() - started, 1), "load_average_start": round(load, 2),
                        "load_average_end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
                        "tmpfs": camp.tmpfs_reason or "mounted",
                        "command": "python bench/fault_campaign.py " + " ".join(argv if argv is not None else sys.argv[1:])})
        print(json.dumps(summary, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps({**summary, "cases": [c.result() for c in cases]}, indent=2,
                                                  default=str))
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    t = summary["total"]
    return 0 if t["survived"] == t["cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
