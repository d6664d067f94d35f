"""The SLURM side: job scripts, tools/submit.py, tools/run_stage.py, and a real one-node SLURM.

The integration tests start Debian's slurm-wlm + munge on this machine (slurm/local_cluster.sh,
its own config, key and ports in a temporary folder), submit the real scripts in rehearsal mode
(SMOLRECIPE_BACKEND=local) and stop the daemons at the end. Where SLURM cannot start here (not
root, packages missing) they are skipped with the reason; under CI they fail instead, since
.ci/run installs the packages.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import submit
import yaml
from conftest import ROOT, pretrain_stages, recipe_variant, sft_stage, step_tokens

from smolrecipe.backends.nanotron.backend import ENTRY_POINT, run_until_stopped
from smolrecipe.errors import UserError
from smolrecipe.jobs.slurm import EVAL_CPUS, data_folders, hub_access
from smolrecipe.preemption import PREEMPTED, StopRequest
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan
from smolrecipe.runs import local_dir as stage_dir
from smolrecipe.runs import read_log

SLURM = ROOT / "slurm"
JOB_SCRIPTS = ["prepare_data", "stage1", "stage2", "stage3", "sft", "preference", "long", "eval"]
TRAINING = ["stage1", "stage2", "stage3", "sft", "preference", "long"]


def sbatch_defaults(script: Path) -> dict[str, str]:
    flags = re.findall(r"^#SBATCH --([a-z-]+)(?:=(\S+))?", script.read_text(), flags=re.M)
    return {name: value for name, value in flags}


# ---------------------------------------------------------------------------------------------
# The scripts themselves


def test_job_scripts_share_one_set_of_defaults():
    defaults = {name: sbatch_defaults(SLURM / f"{name}.sh") for name in JOB_SCRIPTS}
    for name, flags in defaults.items():
        assert flags.pop("job-name") == f"smolrecipe-{name}"
    for name in TRAINING:
        assert defaults[name] == defaults["stage1"]
    assert defaults["stage1"]["nodes"] == "1" and defaults["stage1"]["gpus-per-node"] == "4"
    assert defaults["stage1"]["cpus-per-task"] == "32"
    assert defaults["stage1"]["signal"].startswith("B:USR1@") and "requeue" in defaults["stage1"]
    assert "gpus-per-node" not in defaults["prepare_data"] and defaults["eval"]["gpus-per-node"] == "1"
    assert defaults["prepare_data"]["signal"] == defaults["stage1"]["signal"] and "requeue" in defaults["prepare_data"]
    for name in JOB_SCRIPTS:
        text = (SLURM / f"{name}.sh").read_text()
        assert "set -euo pipefail" in text and 'source "$root/slurm/common.sh"' in text
        assert re.search(r"/(home|scratch|work|users?)/", text) is None, f"{name}.sh names a user path"


@pytest.mark.parametrize("name", [*JOB_SCRIPTS, "setup_env", "local_cluster"])
def test_every_script_has_help(name):
    done = subprocess.run(["bash", str(SLURM / f"{name}.sh"), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert f"slurm/{name}.sh" in done.stdout and "#SBATCH" not in done.stdout


def test_shellcheck_is_clean():
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is missing in CI (.ci/run installs it)")
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    scripts = sorted(str(p) for p in SLURM.glob("*.sh"))
    done = subprocess.run(["shellcheck", "-x", *scripts], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout


def test_a_missing_recipe_is_named_before_anything_runs(tmp_path):
    done = subprocess.run(["bash", str(SLURM / "stage1.sh"), str(tmp_path / "nope.yaml")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and "nope.yaml not found" in done.stderr and "fix:" in done.stderr


def test_readme_hpc_section_matches_the_scripts():
    readme = (ROOT / "README.md").read_text()
    hpc = " ".join(readme[readme.index("## On the cluster"):readme.index("## Layout")].split())  # wrapping aside
    training, prepare, evaluate = (sbatch_defaults(SLURM / f"{n}.sh") for n in ("stage1", "prepare_data", "eval"))
    assert f"--signal={training['signal']} --requeue" in hpc
    assert (f"one node, {training['gpus-per-node']} GPUs, {training['cpus-per-task']} CPUs, "
            f"{int(training['time'].split(':')[0])} h; data prep no GPU, {prepare['cpus-per-task']} CPUs, "
            f"{int(prepare['time'].split(':')[0])} h; eval {evaluate['gpus-per-node']} GPU and "
            f"{evaluate['cpus-per-task']} CPUs") in hpc
    assert "gpus-per-node" not in prepare and f"at most {EVAL_CPUS} CPUs" in hpc
    assert "`cluster.data_job`" in hpc and "`hub: login`" in hpc and "tmux" in hpc
    for name in JOB_SCRIPTS:
        assert f"{name}.sh" in hpc
    for variable in re.findall(r"^#   ([A-Z_]+)", (SLURM / "common.sh").read_text(), flags=re.M):
        assert f"`{variable}" in hpc, f"README's HPC section does not mention {variable}"
    setup = (SLURM / "setup_env.sh").read_text()
    for variable in ("TORCH_VERSION", "TORCH_CUDA"):
        default = re.search(rf"^{variable}=\$\{{{variable}:-(\S+)\}}$", setup, flags=re.M).group(1)
        assert f"`{variable}`, default {default}" in hpc


# ---------------------------------------------------------------------------------------------
# tools/submit.py


def dry_run(capsys, *args) -> list[str]:
    assert submit.main([*args, "--dry-run"]) == 0
    return capsys.readouterr().out.splitlines()


def test_submit_dry_run_is_the_chain_with_the_recipe_flags(capsys, monkeypatch):
    monkeypatch.setenv("SCRATCH", "/cluster/scratch")
    monkeypatch.delenv("SMOLRECIPE_BACKEND", raising=False)
    lines = dry_run(capsys, str(ROOT / "recipes" / "llama500m.yaml"))
    assert len(lines) == 9 and lines[-1].startswith("dry run: 8 job(s) for llama500m (nanotron backend)")
    jobs = [re.search(r"slurm/(\w+)\.sh", line).group(1) for line in lines[:-1]]
    assert jobs == JOB_SCRIPTS
    recipe = yaml.safe_load((ROOT / "recipes" / "llama500m.yaml").read_text())["cluster"]
    data = recipe["data_job"]
    assert data["partition"] != recipe["partition"] and data["time"] != recipe["time"]  # the test means something
    for i, line in enumerate(lines[:-1]):
        assert "--output=/cluster/scratch/smolrecipe/runs/llama500m/slurm/%x-%j.out" in line
        assert line.endswith(str(ROOT / "recipes" / "llama500m.yaml"))
        assert ("--dependency=afterok:<" + jobs[i - 1] + ">" in line) == (i > 0)
        if jobs[i] != "prepare_data":  # the GPU jobs: the cluster's partition and time
            assert f"--time={recipe['time']}" in line and f"--partition={recipe['partition']}" in line
    # The data job: its own CPU partition, time, CPUs and memory, and no GPU request at all.
    assert f"--time={data['time']}" in lines[0] and f"--partition={data['partition']}" in lines[0]
    assert f"--cpus-per-task={data['cpus']} --mem={data['mem_gb']}G" in lines[0]
    assert "--gpus" not in lines[0] and "--gres" not in lines[0] and f"--partition={recipe['partition']} " not in lines[0]
    assert "--gpus-per-node=4 --cpus-per-task=32" in lines[1]
    assert "--gpus-per-node=4 --cpus-per-task=32" in lines[5]  # preference: TRL on the node's GPUs, after sft
    assert "--gpus-per-node=4 --cpus-per-task=32" in lines[6]  # long: the 16k context extension, a branch off stage3
    assert "--gpus-per-node=1 --cpus-per-task=8" in lines[7]

    later = dry_run(capsys, str(ROOT / "recipes" / "llama500m.yaml"), "--from", "stage3")
    assert [re.search(r"slurm/(\w+)\.sh", line).group(1) for line in later[:-1]] == ["stage3", "sft", "preference", "long", "eval"]
    assert "--dependency" not in later[0]


def test_submit_refuses_what_the_jobs_could_not_run(capsys, monkeypatch, tiny_dict, write_recipe):
    monkeypatch.setenv("SCRATCH", "/cluster/scratch")
    assert submit.main([str(ROOT / "recipes" / "llama500m.yaml"), "--from", "stage9", "--dry-run"]) == 2
    assert "--from: 'stage9' is not a job of llama500m" in capsys.readouterr().err
    monkeypatch.delenv("SMOLRECIPE_BACKEND", raising=False)
    assert submit.main([str(ROOT / "recipes" / "tiny.yaml"), "--dry-run"]) == 2  # nanotron needs a GPU per process
    assert "cluster.gpus_per_node: 0 GPU(s)" in capsys.readouterr().err
    tiny_dict["cluster"]["nodes"] = 2
    monkeypatch.setenv("SMOLRECIPE_BACKEND", "local")
    assert submit.main([str(write_recipe(tiny_dict)), "--dry-run"]) == 2
    assert "cluster.nodes: 2 nodes" in capsys.readouterr().err
    monkeypatch.delenv("SCRATCH")
    assert submit.main([str(ROOT / "recipes" / "llama500m.yaml"), "--dry-run"]) == 2
    assert "$SCRATCH is not set" in capsys.readouterr().err


def llama_variant(tmp_path, monkeypatch, **data_job) -> Path:
    """The reference recipe with `cluster.data_job` changed, its data and runs under tmp_path ($SCRATCH)."""
    monkeypatch.setenv("SCRATCH", str(tmp_path))
    data = yaml.safe_load((ROOT / "recipes" / "llama500m.yaml").read_text())
    data["cluster"]["data_job"].update(data_job)
    path = tmp_path / "llama500m.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_manifests(recipe_path: Path, which=None) -> dict[str, str]:
    """A manifest.json in every folder the recipe's stages read (or those `which` names): prepared, as far
    as submit.py can tell."""
    folders = data_folders(resolve_recipe(load_recipe(recipe_path)))
    for what, folder in folders.items():
        if which is None or what in which:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "manifest.json").write_text("{}")
    return folders


def test_hub_login_starts_the_chain_at_the_first_stage_once_the_data_is_prepared(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("SMOLRECIPE_BACKEND", raising=False)
    recipe_path = llama_variant(tmp_path, monkeypatch, hub="login")
    assert submit.main([str(recipe_path), "--dry-run"]) == 2  # nothing prepared yet
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cluster.data_job.hub: login" in err
    assert f"no manifest.json yet: cosmopedia ({tmp_path}/smolrecipe/data/llama500m/cosmopedia)" in err
    assert f"fix: on the login node, inside tmux (it runs for hours): python tools/prepare_data.py {recipe_path} --all" in err
    assert submit.main([str(recipe_path), "--from", "prepare_data", "--dry-run"]) == 2
    assert "--from: prepare_data is not a job of llama500m: cluster.data_job.hub is login" in capsys.readouterr().err

    folders = write_manifests(recipe_path)
    assert "sft" in folders and "slimpajama" in folders  # the SFT chats count too
    lines = dry_run(capsys, str(recipe_path))
    stages = [s.name for s in build_plan(resolve_recipe(load_recipe(recipe_path))).stages]
    assert [re.search(r"slurm/(\w+)\.sh", line).group(1) for line in lines[:-1]] == [*stages, "eval"]
    assert "--dependency" not in lines[0] and "--gpus-per-node=4" in lines[0]
    assert lines[-1].startswith(f"dry run: {len(stages) + 1} job(s) for llama500m")

    (Path(folders["sft"]) / "manifest.json").unlink()  # a folder still being prepared
    assert submit.main([str(recipe_path), "--dry-run"]) == 2
    assert f"1 folder(s) have no manifest.json yet: sft ({folders['sft']})" in capsys.readouterr().err
    assert len(dry_run(capsys, str(recipe_path), "--from", "eval")) == 2  # eval reads no prepared data


@pytest.fixture
def hub_server():
    """A local stand-in for the hub's endpoint: it answers every request (404), as a reachable hub does."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotFound(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once it is closed


def test_only_the_data_job_reaches_the_hub(monkeypatch, tmp_path, hub_server):
    tiny = resolve_recipe(load_recipe(ROOT / "recipes" / "tiny.yaml"))  # local sources only
    for in_job in (False, True):
        assert [hub_access(tiny, step, in_job) for step in JOB_SCRIPTS] == ["online", *["offline"] * 7]

    online = resolve_recipe(load_recipe(llama_variant(tmp_path, monkeypatch, hub="online")))
    monkeypatch.setenv("HF_ENDPOINT", hub_server)
    assert hub_access(online, "prepare_data", in_job=True) == "online"
    assert hub_access(online, "stage1", in_job=True) == "offline"
    monkeypatch.setenv("HF_ENDPOINT", closed_port())  # a compute node that cannot reach the hub
    with pytest.raises(UserError, match="online, but this compute node does not reach http://127.0.0.1") as err:
        hub_access(online, "prepare_data", in_job=True, recipe_arg="recipes/llama500m.yaml")
    assert "set cluster.data_job.hub: login and run `python tools/prepare_data.py recipes/llama500m.yaml --all` " \
           "on the login node (inside tmux)" in err.value.fix
    assert hub_access(online, "prepare_data", in_job=False) == "online"  # not a job: no probe

    login_path = llama_variant(tmp_path, monkeypatch, hub="login")
    login = resolve_recipe(load_recipe(login_path))
    assert hub_access(login, "prepare_data", in_job=False) == "online"  # run by hand: the login node
    with pytest.raises(UserError, match="cluster.data_job.hub"):  # a data job sbatch'ed by hand: its hub data is missing
        hub_access(login, "prepare_data", in_job=True)
    write_manifests(login_path, which={name for name, s in login.sources.items() if s.hf} | {"sft", "preference"})
    assert hub_access(login, "prepare_data", in_job=True) == "offline"  # the rest is local: it may prepare it offline


def source_common(tmp_path, recipe: Path, step: str, **env) -> subprocess.CompletedProcess:
    """slurm/common.sh sourced as job `step`'s script does, printing what it exported."""
    script = tmp_path / "job.sh"
    script.write_text(f'set -euo pipefail\njob_step={step}\nsource "{SLURM}/common.sh"\n'
                      'echo "HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-unset} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-unset}"\n')
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("HF_", "SLURM_", "SMOLRECIPE_")) and k not in ("TRANSFORMERS_OFFLINE", "WANDB_MODE")}
    full = {**base, "SMOLRECIPE_ROOT": str(ROOT), "SMOLRECIPE_VENV": sys.prefix, "SMOLRECIPE_BACKEND": "local", **env}
    return subprocess.run(["bash", str(script), str(recipe)], capture_output=True, text=True, env=full, cwd=tmp_path)


def test_common_sh_sets_the_offline_variables_for_every_job_but_an_online_data_job(tmp_path, monkeypatch, hub_server):
    tiny = ROOT / "recipes" / "tiny.yaml"
    data = source_common(tmp_path, tiny, "prepare_data", SLURM_JOB_ID="7")
    assert data.returncode == 0, data.stderr
    assert "hub online" in data.stdout and "HF_HUB_OFFLINE=unset HF_DATASETS_OFFLINE=unset" in data.stdout
    for step in ("", "stage1"):  # the training and eval scripts set no job_step
        training = source_common(tmp_path, tiny, step, SLURM_JOB_ID="7")
        assert training.returncode == 0 and "HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1" in training.stdout, training.stderr
    assert "HF_HUB_OFFLINE=unset" in source_common(tmp_path, tiny, "", SMOLRECIPE_ONLINE="1").stdout

    scratch = {"SCRATCH": str(tmp_path)}
    online = llama_variant(tmp_path, monkeypatch, hub="online")
    reached = source_common(tmp_path, online, "prepare_data", SLURM_JOB_ID="7", HF_ENDPOINT=hub_server, **scratch)
    assert reached.returncode == 0 and "HF_HUB_OFFLINE=unset" in reached.stdout, reached.stderr
    cut_off = source_common(tmp_path, online, "prepare_data", SLURM_JOB_ID="7", HF_ENDPOINT=closed_port(), **scratch)
    assert cut_off.returncode == 1 and "HF_HUB_OFFLINE" not in cut_off.stdout
    assert "error:" in cut_off.stderr and "does not reach" in cut_off.stderr
    login = llama_variant(tmp_path, monkeypatch, hub="login")
    refused = source_common(tmp_path, login, "prepare_data", SLURM_JOB_ID="7", **scratch)
    assert refused.returncode == 1 and "cluster.data_job.hub: login" in refused.stderr


def test_the_data_job_uses_its_cpus_and_keeps_the_finished_tasks():
    text = (SLURM / "prepare_data.sh").read_text()
    command = text.splitlines()[-1]
    assert command.startswith("smolrecipe_preemptible python tools/prepare_data.py \"$RECIPE\" --all")  # requeues on SIGUSR1
    assert '--workers "${SLURM_CPUS_PER_TASK:-$(nproc)}"' in command and "--tasks" not in command  # tasks: the plan's
    for script in ("prepare_data.sh", "common.sh"):
        assert re.search(r"\brm\b|\.work", (SLURM / script).read_text().replace("<data>/<recipe>/.work/", "")) is None


# ---------------------------------------------------------------------------------------------
# tools/run_stage.py on the nanotron backend (the command and config here; tests/test_engine.py runs it)


@pytest.mark.slow
def test_nanotron_stage_job_resumes_its_own_checkpoints_and_skips_a_finished_stage(prepared, tmp_path, capsys):
    import run_stage

    recipe_path = recipe_variant(prepared[0], tmp_path / "tiny.yaml")
    recipe = resolve_recipe(load_recipe(recipe_path))
    plan = build_plan(recipe)
    stage1, stage2 = plan.stage("stage1"), plan.stage("stage2")
    args = [str(recipe_path), "stage2", "--backend", "nanotron", "--gpus", "1"]

    assert run_stage.main([*args, "--dry-run"]) == 0  # stage 1 not trained: dry run still shows the command
    out = capsys.readouterr().out
    config_path = Path(stage2.checkpoints_path).parent / "config.yaml"
    assert f"torchrun --standalone --nproc_per_node=1 {ENTRY_POINT} --config-file {config_path}" in out
    config = yaml.safe_load(config_path.read_text())["checkpoints"]
    assert config["resume_checkpoint_path"] == stage1.final_checkpoint() and config["load_lr_scheduler"] is False
    settings = json.loads((config_path.parent / "settings.json").read_text())
    assert settings["recipe_hash"] == load_recipe(recipe_path).hash() and settings["index"] == 1

    assert run_stage.main(args) == 2  # for real: stage 1 must have finished
    assert "stage2.init_from: stage1 has not finished" in capsys.readouterr().err

    own = Path(stage2.checkpoints_path)  # a job of stage 2 that was stopped at step 8
    (own / "8").mkdir(parents=True)
    (own / "latest.txt").write_text("8")
    assert run_stage.main([*args, "--dry-run"]) == 0
    assert f"resumes from {own}" in capsys.readouterr().out
    config = yaml.safe_load(config_path.read_text())["checkpoints"]
    assert config["resume_checkpoint_path"] == str(own) and config["load_lr_scheduler"] is True
    assert config["load_optimizer"] is True

    (own / str(stage2.train_steps)).mkdir()
    (own / "latest.txt").write_text(str(stage2.train_steps))
    assert run_stage.main(args) == 0
    assert "stage2: already finished" in capsys.readouterr().out

    assert run_stage.main([*args[:-2], "--gpus", "4", "--dry-run"]) == 2
    assert "parallelism: dp x tp x pp = 1 processes, but the job has 4 GPU(s)" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("obeys", [True, False], ids=["stops-itself", "ended-after-grace"])
def test_a_stop_request_ends_torchrun_and_its_workers(tmp_path, obeys):
    """The nanotron job's launcher: on SIGUSR1 the job writes the stop file; workers that see it
    exit by themselves (ours save a checkpoint first), workers that do not are ended with torchrun
    after the grace time. Either way it reports PREEMPTED (the batch script then requeues it).
    Real torchrun, two CPU workers."""
    worker = tmp_path / "worker.py"
    stop_file = tmp_path / "stop-request"
    watch = f"    if pathlib.Path({str(stop_file)!r}).exists(): sys.exit(75)\n" if obeys else ""
    worker.write_text("import os, pathlib, sys, time\n"
                      f"pathlib.Path({str(tmp_path)!r}, os.environ['RANK']).write_text(str(os.getpid()))\n"
                      "for _ in range(1200):\n" + watch + "    time.sleep(0.1)\n")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    stop = StopRequest()
    command = [torchrun, "--standalone", "--nproc_per_node=2", str(worker)]

    def stop_once_both_workers_run():
        deadline = time.monotonic() + 60
        while not all((tmp_path / rank).is_file() for rank in ("0", "1")) and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.signum = signal.SIGUSR1

    threading.Thread(target=stop_once_both_workers_run, daemon=True).start()
    started = time.monotonic()
    assert run_until_stopped(command, stop, stop_file=stop_file, poll_s=0.1, grace_s=2.0) == PREEMPTED
    assert time.monotonic() - started < 100  # ended, not slept out
    assert stop_file.read_text() == "SIGUSR1\n"
    for rank in ("0", "1"):
        pid = int((tmp_path / rank).read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# ---------------------------------------------------------------------------------------------
# A real SLURM


def free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two consecutive free ports")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running one-node SLURM: the environment that points its commands at it."""
    missing = [tool for tool in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(tool) is None]
    reason = (f"SLURM cannot start here: {', '.join(missing)} not installed (apt-get install slurm-wlm munge)" if missing
              else "SLURM cannot start here: slurmd needs root" if os.geteuid() != 0 else None)
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs and starts it in CI")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SMOLRECIPE_SLURM_PORT": str(free_port_pair()), "SLURM_CONF": str(folder / "slurm.conf"),
           "SMOLRECIPE_BACKEND": "local", "SMOLRECIPE_VENV": sys.prefix}
    script = str(SLURM / "local_cluster.sh")
    started = subprocess.run(["bash", script, "start", str(folder)], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in folder.glob("*.log"))
        subprocess.run(["bash", script, "stop", str(folder)], env=env, capture_output=True)
        pytest.fail(f"slurm/local_cluster.sh start failed: {started.stderr}{logs}")
    yield env
    subprocess.run(["bash", script, "stop", str(folder)], env=env, capture_output=True)


DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def job_info(env, job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], env=env, capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for(env, job_ids: list[str], timeout: float = 600) -> dict[str, dict[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        infos = {job_id: job_info(env, job_id) for job_id in job_ids}
        if all(info.get("JobState") in DONE for info in infos.values()):
            return infos
        assert time.monotonic() < deadline, f"jobs still not done after {timeout} s: {infos}"
        time.sleep(1)


def sbatch(env, *args) -> str:
    done = subprocess.run(["sbatch", "--parsable", *args], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def log_steps(folder: Path) -> list[int]:
    log = folder / "log.jsonl"
    return [r["step"] for r in read_log(log)[0]] if log.is_file() else []


def stage1_only(steps: int):
    def edit(data):
        data["stages"][0]["tokens"] = steps * step_tokens(data)
        data["training"]["checkpoint_interval"] = 1000  # the only mid-stage checkpoint is the signal's

    return edit


@pytest.fixture(scope="module")
def rehearsal_jobs(slurm, prepared, tmp_path_factory):
    """Two identical stage-1 jobs through `sbatch slurm/stage1.sh`, side by side on one CPU each:
    one left alone, one sent SIGUSR1 (as SLURM does before the time limit) after a few steps."""
    steps = 48
    recipes = {name: recipe_variant(prepared[0], tmp_path_factory.mktemp(name) / "tiny.yaml", stage1_only(steps))
               for name in ("plain", "signalled")}
    ids = {name: sbatch(slurm, "--gpus-per-node=0", "--cpus-per-task=1", f"--output={path.parent}/%x-%j.out",
                        str(SLURM / "stage1.sh"), str(path)) for name, path in recipes.items()}
    signalled = stage_dir(resolve_recipe(load_recipe(recipes["signalled"])), "stage1")
    deadline = time.monotonic() + 300
    while len(log_steps(signalled)) < 4:
        assert job_info(slurm, ids["signalled"]).get("JobState") in ("PENDING", "RUNNING"), job_info(slurm, ids["signalled"])
        assert time.monotonic() < deadline, "the signalled job did not reach step 4"
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", "--batch", ids["signalled"]], env=slurm, check=True)
    infos = wait_for(slurm, list(ids.values()))
    output = {name: (recipes[name].parent / f"smolrecipe-stage1-{ids[name]}.out").read_text() for name in ids}
    return {name: (recipes[name], ids[name], infos[ids[name]], output[name]) for name in ids}, steps


@pytest.mark.slow
def test_sbatch_stage1_in_rehearsal_mode_trains_to_its_checkpoint(rehearsal_jobs):
    jobs, steps = rehearsal_jobs
    recipe_path, _, info, output = jobs["plain"]
    assert info["JobState"] == "COMPLETED", output[-3000:]
    assert info["Restarts"] == "0" and "backend local" in output
    out = stage_dir(resolve_recipe(load_recipe(recipe_path)), "stage1")
    assert (out / f"checkpoint-{steps}" / "model.safetensors").is_file()
    assert json.loads((out / "summary.json").read_text())["steps"] == steps
    assert re.search(rf"stage1: {steps} steps, [\d,]+ tokens", output)


@pytest.mark.slow
def test_a_signalled_job_checkpoints_requeues_and_resumes_to_the_same_losses(rehearsal_jobs):
    jobs, steps = rehearsal_jobs
    recipe_path, _, info, output = jobs["signalled"]
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", output[-3000:]
    stopped = re.search(rf"stage1: stopped at step (\d+) of {steps} with a checkpoint", output)
    assert stopped and "requeueing job" in output and "(restart 1)" in output, output[-3000:]
    out = stage_dir(resolve_recipe(load_recipe(recipe_path)), "stage1")
    assert (out / f"checkpoint-{stopped.group(1)}").is_dir() and 4 <= int(stopped.group(1)) < steps
    ours = read_log(out / "log.jsonl")[0]
    assert [r["step"] for r in ours] == list(range(1, steps + 1))  # no step trained twice, none skipped
    plain = read_log(stage_dir(resolve_recipe(load_recipe(jobs["plain"][0])), "stage1") / "log.jsonl")[0]
    assert [r["loss"] for r in ours] == pytest.approx([r["loss"] for r in plain], rel=1e-5)


def short_chain_with_eval(data):
    for stage in pretrain_stages(data):
        stage["tokens"] = 8 * step_tokens(data)
        stage["eval_suites"] = []
    for stage in data["stages"]:
        stage["lr"]["warmup_steps"] = 2
    sft_stage(data).update(steps=8, eval_suites=["tier4"])  # the SFT prompt suite ships with the repo
    next(s for s in data["stages"] if s["kind"] == "preference").update(steps=8, eval_suites=["tier4"])
    data["cluster"]["cpus_per_task"] = os.cpu_count() or 1


@pytest.mark.slow
def test_submit_runs_the_whole_chain_in_order(slurm, prepared, tmp_path, capsys, monkeypatch):
    recipe_path = recipe_variant(prepared[0], tmp_path / "tiny.yaml", short_chain_with_eval)
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    assert submit.main([str(recipe_path)]) == 0
    printed = capsys.readouterr().out
    ids = re.findall(r"^\s+(\d+)\s+(\w+)\s+sbatch", printed, flags=re.M)
    assert [name for _, name in ids] == JOB_SCRIPTS
    infos = wait_for(slurm, [job_id for job_id, _ in ids])
    recipe = resolve_recipe(load_recipe(recipe_path))
    logs = Path(recipe.paths.runs) / recipe.name / "slurm"
    for job_id, name in ids:
        assert infos[job_id]["JobState"] == "COMPLETED", (logs / f"tiny-{name}-{job_id}.out").read_text()[-3000:]
    for (before, _), (after, _) in zip(ids, ids[1:], strict=False):  # afterok: each started only once the one before ended
        assert infos[after]["StartTime"] >= infos[before]["EndTime"]
    for stage in build_plan(recipe).stages:
        assert json.loads((stage_dir(recipe, stage.name) / "summary.json").read_text())["steps"] == stage.train_steps
    tier4 = json.loads((Path(recipe.paths.runs) / "tiny" / "eval" / "sft" / "step-8" / "tier4.json").read_text())
    assert tier4["tasks"]["sft_suite"]["n"] == 50 and tier4["model"]["stage"] == "sft"
    aligned = json.loads((Path(recipe.paths.runs) / "tiny" / "eval" / "preference" / "step-8" / "tier4.json").read_text())
    assert aligned["tasks"]["sft_suite"]["n"] == 50 and aligned["model"]["kind"] == "preference"
    assert "up to date" in (logs / f"tiny-prepare_data-{ids[0][0]}.out").read_text()  # the data was prepared


@pytest.mark.slow
def test_a_sweep_runs_as_one_chain_per_variant(slurm, prepared, tmp_path, capsys, monkeypatch):
    """tools/sweep.py --run --slurm: one data job, one stage + eval chain per scale; once they are
    measured, the same command writes the forecast and submits the holdout; --fit compares."""
    import sweep

    from demo.corpus import write_demo_corpus

    recipe_path, data = prepared
    write_demo_corpus(data / "heldout", seed=1, scale=0.05)  # what the eval jobs score, under $SMOLRECIPE_DATA
    base = recipe_variant(recipe_path, tmp_path / "base.yaml", lambda d: d["cluster"].update(cpus_per_task=os.cpu_count() or 1))
    spec = tmp_path / "mini.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "mini", "kind": "scaling", "recipe": str(base), "stage": "stage1", "eval_suite": "sweep_tiny",
        "tokens": [8 * 2048], "law": "power", "bootstrap": 20,
        "scales": [{"name": "a", "hidden_size": 32, "num_layers": 1}, {"name": "b", "hidden_size": 64, "num_layers": 1}],
        "holdout": [{"name": "c", "hidden_size": 64, "num_layers": 2}],
        "lr": {"peak": 4e-3, "warmup_steps": 2, "min": 4e-4, "decay": "cosine"}}))
    for name, value in {**slurm, "SMOLRECIPE_DATA": str(data)}.items():
        monkeypatch.setenv(name, value)

    def submitted() -> list[tuple[str, str, str]]:
        assert sweep.main([str(spec), "--run", "--slurm"]) == 0
        out = capsys.readouterr().out
        jobs = re.findall(r"^\s+(\d+)\s+(\S+)\s+(\S+)$", out, flags=re.M)
        infos = wait_for(slurm, [job_id for job_id, _, _ in jobs])
        logs = tmp_path / "runs" / "sweeps" / "mini"
        for job_id, label, name in jobs:
            log = next(logs.glob(f"mini-{label}/slurm/mini-{label}-{name}-{job_id}.out"))
            assert infos[job_id]["JobState"] == "COMPLETED", log.read_text()[-3000:]
        return [(label, name) for _, label, name in jobs], out

    jobs, _ = submitted()
    assert jobs == [("a", "prepare_data"), ("a", "stage1"), ("a", "eval"), ("b", "stage1"), ("b", "eval")]
    jobs, out = submitted()  # the points are measured: the forecast, then the holdout's chain
    assert "forecast for c" in out and [j for _, j in jobs] == ["prepare_data", "stage1", "eval"] and {lab for lab, _ in jobs} == {"c"}
    assert sweep.main([str(spec), "--fit"]) == 0
    result = json.loads((tmp_path / "runs" / "sweeps" / "mini" / "sweep.json").read_text())
    assert result["predicted_before_training"] and result["measured_loss"] > 0
    assert [p["status"] for p in result["points"]] == ["done", "done", "done"]


@pytest.mark.slow
def test_a_requeued_data_job_continues_from_its_finished_tasks(slurm, prepared, tmp_path):
    """`sbatch slurm/prepare_data.sh` on one CPU, sent SIGUSR1 (as SLURM does before the time limit) once
    some datatrove tasks have finished: the job requeues itself, the rerun skips the finished tasks, and
    every folder ends byte-identical to an uninterrupted preparation."""
    import prepare_data

    from demo.corpus import write_demo_corpus

    write_demo_corpus(tmp_path / "corpus", seed=0, scale=4.0, shards=8)  # 8 tasks per source: time to signal

    def edit(data_root):
        def change(data):
            data["paths"]["data"] = str(data_root)
            for source in data["sources"].values():  # prose_long reads prose's files; needles are generated
                source.update(path=str(tmp_path / "corpus" / Path(source["path"]).name))
                if not source.get("needles"):
                    source["tasks"] = 8  # one per file
            sft_stage(data)["data"]["path"] = str(tmp_path / "corpus" / "chats")
        return change

    for run in ("job", "plain"):
        (tmp_path / run).mkdir()
    job_recipe = recipe_variant(prepared[0], tmp_path / "job" / "tiny.yaml", edit(tmp_path / "job" / "data"))
    job_id = sbatch(slurm, "--cpus-per-task=1", f"--output={tmp_path}/%x-%j.out", str(SLURM / "prepare_data.sh"), str(job_recipe))
    work = tmp_path / "job" / "data" / "tiny" / ".work"
    deadline = time.monotonic() + 300
    while not list(work.glob("*/logs/tokenize/completions/*")):
        assert job_info(slurm, job_id).get("JobState") in ("PENDING", "RUNNING"), job_info(slurm, job_id)
        assert time.monotonic() < deadline, "no datatrove task of the data job finished"
        time.sleep(0.05)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=slurm, check=True)
    info = wait_for(slurm, [job_id])[job_id]
    output = (tmp_path / f"smolrecipe-prepare_data-{job_id}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", output[-3000:]
    assert "requeueing job" in output and "(restart 1)" in output and "hub online" in output
    assert re.search(r"Skipping \d+ already completed tasks", output), output[-3000:]

    plain = recipe_variant(prepared[0], tmp_path / "plain" / "tiny.yaml", edit(tmp_path / "plain" / "data"))
    assert prepare_data.main([str(plain), "--all", "--workers", "2"]) == 0
    for source in yaml.safe_load(plain.read_text())["sources"]:
        ours, theirs = (tmp_path / run / "data" / "tiny" / source for run in ("job", "plain"))
        assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in theirs.iterdir())
        for path in ours.glob("*.ds"):
            assert path.read_bytes() == (theirs / path.name).read_bytes(), path


@pytest.mark.slow
def test_datatrove_slurm_executor_prepares_a_source_on_the_cluster(slurm, prepared, tmp_path, monkeypatch):
    """`prepare_data.py --executor slurm`: datatrove's SlurmPipelineExecutor submits the source's
    steps as job arrays; the published folder matches the one the local executor made."""
    import prepare_data

    recipe_path = recipe_variant(prepared[0], tmp_path / "tiny.yaml", lambda d: d["paths"].update(data=str(tmp_path / "data")))
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    assert prepare_data.main([str(recipe_path), "--executor", "slurm", "--source", "forum", "--tasks", "2"]) == 0
    published = tmp_path / "data" / "tiny" / "forum" / "manifest.json"
    deadline = time.monotonic() + 600
    while not published.is_file():
        queued = subprocess.run(["squeue", "--noheader"], env=slurm, capture_output=True, text=True).stdout
        assert queued.strip() or published.is_file(), "the datatrove jobs ended without publishing the folder"
        assert time.monotonic() < deadline
        time.sleep(1)
    ours, local = json.loads(published.read_text()), json.loads((prepared[1] / "tiny" / "forum" / "manifest.json").read_text())
    assert ours["tokens"] == local["tokens"] > 0 and ours["documents_kept"] == local["documents_kept"]
