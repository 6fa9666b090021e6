"""The experiment folder as an adversary or a careless user meets it: literal names, no escapes, one line.

Each test is a finding of issue 11, reproduced through the real ``speechllm`` command.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SPEECHLLM, load_cuts, write_tone


def _tree(root: Path) -> dict[str, str]:
    """Every file below ``root`` with its content hash: what "nothing changed" is checked against."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line(result, code: int = 1) -> str:  # noqa: ANN001
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def _clips(folder: Path, name: str = "clips #1.tsv") -> Path:
    write_tone(folder / "a.wav")
    write_tone(folder / "b.wav")
    tsv = folder / name
    tsv.write_text("path\ttext\na.wav\tfirst clip\nb.wav\tsecond clip\n", encoding="utf-8")
    return tsv


def test_option_values_are_taken_literally(cli, tmp_path: Path) -> None:
    """A '#' in a path and a numeric split name used to be parsed as YAML (a comment, an int)."""
    tsv = _clips(tmp_path / "in")
    result = cli("prepare-data", "--tsv", tsv.relative_to(tmp_path), "--split", "2024", "--exp-dir", "exp")
    assert result.returncode == 0, result.stderr
    assert len(load_cuts(tmp_path / "exp/data/2024/cuts.jsonl.gz")) == 2


def test_messages_are_printed_without_markup(cli, tmp_path: Path) -> None:
    missing = _one_line(cli("prepare-data", "--tsv", "in/[red]x.tsv", "--split", "a"))
    assert missing == "error: prepare_data.tsv.file: no such file: in/[red]x.tsv"
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("path\ttext\ngone.wav\thello\n", encoding="utf-8")
    bad = _one_line(cli("prepare-data", "--tsv", "bad.tsv", "--split", "a"))
    assert bad.endswith("[split a; --on-bad-input skip skips and counts these]"), bad


@pytest.mark.parametrize("split", ["../../../x", "/tmp/speechllm-abs-split", "a/b", ".hidden", ".."])
def test_split_names_cannot_leave_the_experiment_folder(cli, tmp_path: Path, split: str) -> None:
    tsv = _clips(tmp_path / "in", "ok.tsv")
    before = _tree(tmp_path)
    line = _one_line(cli("prepare-data", "--tsv", tsv, "--split", split, "--exp-dir", "a/b/exp"))
    assert "prepare_data.tsv.split" in line and "is not a plain name" in line, line
    assert _tree(tmp_path) == before
    assert not Path(split).is_absolute() or not Path(split).exists()


def test_system_names_cannot_delete_outside_the_folder(cli, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (victim / "checkpoint").mkdir(parents=True)
    (victim / ".done").write_text("{}", encoding="utf-8")
    (victim / "checkpoint" / "keep.txt").write_text("mine", encoding="utf-8")
    before = _tree(tmp_path)
    line = _one_line(cli("align", "--recipe", "tiny", "--exp-dir", "exp",
                         "--set", 'align.systems={"../../victim": {"mode": "tasu", "text_sets": [train]}}'))
    assert "align.systems" in line and "'../../victim' is not a plain name" in line, line
    assert _tree(tmp_path) == before


def test_exp_dir_that_is_a_file_is_one_line(cli, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("not a folder", encoding="utf-8")
    assert _one_line(cli("prepare-text", "--recipe", "tiny", "--exp-dir", "f")) == \
        "error: --exp-dir f: is a file, not a folder"


def test_decode_system_without_files_narrows_the_recipe(cli) -> None:
    line = _one_line(cli("decode", "--recipe", "tiny", "--system", "bogus"))
    assert line.startswith("error: --system bogus: not in decode.systems (known: ctc, ctc_lm, tasu")


def test_a_copied_recipe_folder_runs_its_stages(tmp_path: Path) -> None:
    """run.sh used to be a relative link to the mini recipe's script: dangling once the folder was copied."""
    import shutil
    import subprocess

    from tests.conftest import REPO, SPEECHLLM

    recipe = tmp_path / "my-recipe"
    shutil.copytree(REPO / "recipes/tiny", recipe, symlinks=True)
    env = {"PATH": f"{SPEECHLLM.parent}:/usr/bin:/bin"}
    result = subprocess.run([str(recipe / "run.sh"), "--stage", "8", "--exp-dir", "exp"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"== stage 8: speechllm score --recipe {recipe} --exp-dir exp",
        "error: score: nothing decoded yet in exp/decode and no curriculum-finetune cell evaluated (run decode or "
        "curriculum-finetune first)"]


def test_no_module_unpickles() -> None:
    """Checkpoints and caches are safetensors + JSON: loading a shared experiment folder runs none of its code."""
    from tests.conftest import REPO

    offending = [f"{path.relative_to(REPO)}:{number}" for path in sorted((REPO / "speechllm_cli").rglob("*.py"))
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if any(word in line for word in ("pickle", "torch.load(", "weights_only=False"))]
    assert offending == []


def test_a_unit_in_use_is_refused_naming_its_holder_and_free_again_after(tmp_path: Path) -> None:
    """The runner's lock, in one process: a unit whose work is under way cannot be started a second time."""
    import os
    import threading

    from speechllm_cli.common.errors import SpeechLLMError
    from speechllm_cli.stages.recipe import RecipeConfig
    from speechllm_cli.stages.runner import Context, Unit, run_units

    started, release = threading.Event(), threading.Event()

    def work() -> dict[str, int]:
        started.set()
        release.wait(30)
        (tmp_path / "exp/unit").mkdir(parents=True, exist_ok=True)
        return {"n": 1}

    context = Context(RecipeConfig(name="locks"), tmp_path / "exp", command="speechllm first")
    unit = Unit("unit", tmp_path / "exp/unit", {"a": 1}, [], work)
    first = threading.Thread(target=run_units, args=(context, [unit]))
    first.start()
    assert started.wait(30)
    with pytest.raises(SpeechLLMError) as refused:
        run_units(context, [unit])
    assert str(refused.value).startswith(f"{tmp_path / 'exp/unit'}: in use by pid {os.getpid()} on ")
    assert str(refused.value).endswith("(speechllm first); wait for it to finish or stop it")
    release.set()
    first.join(30)
    assert [outcome.reused for outcome in run_units(context, [unit])] == [True]


MEASURED = """
import sys
from speechllm_cli.cli.app import app
sys.argv = ["speechllm", *sys.argv[1:]]
try:
    app()
finally:
    status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
    print(f"peak rss kb: {status}", file=sys.stderr)
"""
"""speechllm, printing its peak resident set last (VmHWM: this program's own, where ru_maxrss would count the
memory of the process that forked it)."""


def test_an_alias_bomb_is_refused_in_one_line_before_it_takes_memory(tmp_path: Path) -> None:
    """Issue 25, finding 2: nine levels of nine aliases under a free-form section (10^9 values written out)."""
    import subprocess

    from tests.conftest import SPEECHLLM

    levels = ["    l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("name: bomb\ntrain_encoder:\n  encoder: whisper-ctc\n  model:\n"
                                        + "\n".join(levels) + "\n", encoding="utf-8")
    result = subprocess.run([str(SPEECHLLM.parent / "python"), "-c", MEASURED, "train-encoder", "--recipe",
                             "bomb.yaml"], cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and lines[0] == (
        "error: bomb.yaml: invalid YAML (aliases expand it to more than 100,000 values)"), result.stderr
    assert int(lines[-1].removeprefix("peak rss kb: ")) < 200 * 1024


def test_a_key_given_twice_is_refused_naming_its_line(cli, tmp_path: Path) -> None:
    (tmp_path / "twice.yaml").write_text("name: twice\nprepare_text:\n  normalize: {lowercase: true}\n"
                                         "  normalize: {lowercase: false}\n", encoding="utf-8")
    line = _one_line(cli("prepare-text", "--recipe", "twice.yaml"))
    assert line == "error: twice.yaml:4: invalid YAML (duplicate key 'normalize')"


def test_audio_replaced_in_place_makes_prepare_data_rebuild_its_split(cli, tmp_path: Path) -> None:
    """Issue 25, finding 3: other audio copied over the same paths (other lengths) is noticed; the manifest is
    rebuilt with the new durations instead of "up to date" and a decode failing on declared samples."""
    tsv = _clips(tmp_path / "in", "ok.tsv")
    command = ("prepare-data", "--tsv", tsv, "--split", "s", "--exp-dir", "exp")
    assert cli(*command).returncode == 0
    before = {cut.id: cut.duration for cut in load_cuts(tmp_path / "exp/data/s/cuts.jsonl.gz")}
    assert "1 outputs (1 up to date)" in cli(*command).stdout
    write_tone(tmp_path / "in/a.wav", seconds=2.5)
    again = cli(*command)
    assert again.returncode == 0 and "1 outputs (0 up to date)" in again.stdout, again.stdout
    after = {cut.id: cut.duration for cut in load_cuts(tmp_path / "exp/data/s/cuts.jsonl.gz")}
    assert after.keys() == before.keys() and sorted(after.values()) != sorted(before.values())
    assert 2.5 in after.values()


def _full_disk_available() -> bool:
    """A full disk is made as a small tmpfs in a private mount namespace; a machine without user namespaces
    cannot make one (the test then says so as a skip, it does not pass)."""
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _full_disk_available(), reason="needs `unshare -rm` and tmpfs mounts to fill a disk")
def test_a_full_disk_names_the_output_and_leaves_nothing_taken_as_done(tmp_path: Path) -> None:
    """Issue 25, finding 8: a full disk was `unexpected OSError: [Errno 28]` naming no file."""
    tsv = _clips(tmp_path / "in")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f"mount -t tmpfs -o size=256k tmpfs {disk} && head -c 250000 /dev/zero > {disk}/filler && "
              f"{SPEECHLLM} prepare-data --tsv '{tsv}' --split mine --exp-dir {disk}/exp; echo rc=$?; "
              f"ls -A {disk}/exp; test -e {disk}/exp/data || echo no data folder")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, check=False)
    assert result.stderr.strip() == (f"error: {disk}/exp/data/mine/cuts.jsonl.gz: no space left on device to "
                                     "write it (0 KiB free there)")
    listing = result.stdout.splitlines()
    assert listing[0] == "rc=1"
    assert listing[1:] == [".cache", "no data folder"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (("align", "--set", "align.train.lr=3e38"), 1,
     "align.train.lr: at most 1e+30 (float32 arithmetic overflows beyond)"),
    (("decode", "--set", "decode.batch_size=true"), 1, "decode.batch_size: a number, not true"),
    (("run", "--num-processes", "0"), 2, "--num-processes: at least 1 process (got 0)"),
    (("run", "--stage", "9"), 2, "--stage 9 --stop-stage 8: the stages are 1-8, the first not after the last"),
], ids=["lr overflow", "boolean batch size", "no processes", "stage past the last"])
def test_out_of_range_settings_are_one_line_before_any_work(cli, tmp_path: Path, args: tuple[str, ...], code: int,
                                                             message: str) -> None:
    """Issue 25, finding 9: an overflow RuntimeError, a batch of `true` taken as 1, Typer's boxed panel, and a
    run of a stage past the last that exited 0 having run nothing."""
    line = _one_line(cli(*args[:1], "--recipe", "tiny", "--exp-dir", "exp", *args[1:]), code)
    assert line.startswith("error: ") and line.endswith(message)
    assert not (tmp_path / "exp").exists()


def test_links_that_lead_nowhere_are_named_as_links(cli, tmp_path: Path) -> None:
    """Issue 25, finding 9: a loop of symbolic links was reported as a file that does not exist."""
    (tmp_path / "loop1.tsv").symlink_to("loop2.tsv")
    (tmp_path / "loop2.tsv").symlink_to("loop1.tsv")
    line = _one_line(cli("prepare-data", "--tsv", "loop1.tsv", "--split", "s"))
    assert line == "error: prepare_data.tsv.file: loop1.tsv is a loop of symbolic links"
    tsv = _clips(tmp_path / "in", "clips.tsv")
    (tmp_path / "in/c.wav").symlink_to(tmp_path / "in/gone.wav")
    tsv.write_text(tsv.read_text(encoding="utf-8") + "c.wav\tthird clip\n", encoding="utf-8")
    line = _one_line(cli("prepare-data", "--tsv", tsv, "--split", "s"))
    assert line.startswith(f"error: {tsv}:4: audio file {tmp_path / 'in/c.wav'} of utterance 'c' is a symbolic "
                           f"link to {tmp_path / 'in/gone.wav'}, which does not exist")
