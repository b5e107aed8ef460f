"""The Ray executor on a real local Ray cluster of two nodes (127.0.0.1), against the local executor.

The cluster (two worker nodes of one CPU each, a 100 MB object store each) is started once for the module and
shut down after it. Pipelines run the real default model in the actors.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from orchestra import LabelingFunctions, LabelModelStep, OrchestraError, Pipeline, Task

from .conftest import EXAMPLES, ROOT, cli_command, cli_env

ray = pytest.importorskip("ray", reason="the Ray executor tests need ray (pip install 'orchestra[ray]')")

pytestmark = pytest.mark.slow  # Ray start-up plus one model load per actor: over a minute on 2 cores

OBJECT_STORE = 100 * 1024 * 1024
ROWS = 8

PIPELINE = """\
name: reviews
engine: {backend: local, model: smollm2-135m, options: {max_model_len: 256, kv_cache_memory: 67108864}}
data: {path: reviews.csv, id: id, gold: label}
task:
  labels: [negative, positive]
  input: "Review: {text}\\nIs this review positive or negative?\\nAnswer:"
  verbalizers: {negative: [negative, bad], positive: [positive, good]}
steps:
  - lfs: {module: review_lfs.py, fields: [text]}
  - prompt: {by: mean}
  - label_model: {method: auto, output: weak_label}
output: {path: out/reviews.parquet, report: out/reviews.html}
run: {chunk_size: 2, seed: 0}
"""


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster of two nodes with one CPU each, on this machine."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE,
                                                          "include_dashboard": False})
    nodes.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
    nodes.wait_for_nodes()
    yield nodes
    if ray.is_initialized():
        ray.shutdown()
    nodes.shutdown()


def make_project(folder):
    folder.mkdir(parents=True)
    shutil.copy(EXAMPLES / "inputs" / "reviews.csv", folder / "reviews.csv")
    shutil.copy(EXAMPLES / "review_lfs.py", folder / "review_lfs.py")
    (folder / "pipeline.yaml").write_text(PIPELINE)
    return folder / "pipeline.yaml"


def run_cli(*args, timeout=600):
    return subprocess.run(cli_command(*args), cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def local_output(tmp_path_factory, model_installed):
    """The output of the pipeline run by the local executor (bytes), and its job's response cache."""
    folder = tmp_path_factory.mktemp("local")
    yaml_path = make_project(folder / "project")
    done = run_cli("run", str(yaml_path), "--limit", str(ROWS), "--job-dir", str(folder / "job"))
    assert done.returncode == 0, done.stderr
    assert "executor local" in done.stdout
    return (folder / "project" / "out" / "reviews.parquet").read_bytes(), folder / "job" / "cache.sqlite"


def test_ray_output_is_byte_identical_to_local_and_reuses_the_cache(cluster, local_output, tmp_path):
    expected, local_cache = local_output
    yaml_path = make_project(tmp_path / "project")
    output = tmp_path / "project" / "out" / "reviews.parquet"
    done = run_cli("run", str(yaml_path), "--limit", str(ROWS), "--job-dir", str(tmp_path / "job"),
                   "--executor", "ray", "--address", cluster.address, "--num-actors", "2")
    assert done.returncode == 0, done.stderr
    assert "4 chunks run, 0 resumed, executor ray" in done.stdout
    assert f"cache: 0 hits, {ROWS} misses" in done.stdout, "the actors' engine calls are counted by the driver"
    assert output.read_bytes() == expected
    summary = (tmp_path / "job" / "summary.json").read_text()
    assert '"label_distribution"' in summary and '"misses": 8' in summary

    # The finished Ray job re-run by the local executor: every chunk resumes, no model is even loaded.
    output.unlink()
    rerun = run_cli("run", str(yaml_path), "--limit", str(ROWS), "--job-dir", str(tmp_path / "job"))
    assert rerun.returncode == 0, rerun.stderr
    assert "0 chunks run, 4 resumed, executor local" in rerun.stdout
    assert f"cache: 0 hits, 0 misses, 0 engine calls; {ROWS} responses stored" in rerun.stdout
    assert output.read_bytes() == expected

    # A new job over the cache the local executor filled: every request is a hit, no model call.
    output.unlink()
    again = run_cli("run", str(yaml_path), "--limit", str(ROWS), "--job-dir", str(tmp_path / "job2"),
                    "--executor", "ray", "--address", cluster.address, "--num-actors", "2",
                    "--set", f"engine.cache={local_cache}")
    assert again.returncode == 0, again.stderr
    assert f"cache: {ROWS} hits, 0 misses, 0 engine calls" in again.stdout
    assert output.read_bytes() == expected


def committed(job):
    import json

    try:
        return len(json.loads((job / "manifest.json").read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


def test_a_killed_ray_driver_resumes_to_the_same_bytes(cluster, local_output, tmp_path):
    expected, _ = local_output
    yaml_path = make_project(tmp_path / "project")
    job = tmp_path / "job"
    args = ("run", str(yaml_path), "--limit", str(ROWS), "--job-dir", str(job), "--set", "run.chunk_size=1",
            "--executor", "ray", "--address", cluster.address, "--num-actors", "2")
    proc = subprocess.Popen(cli_command(*args), cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    start = time.monotonic()
    while proc.poll() is None and committed(job) < 3 and time.monotonic() - start < 400:
        time.sleep(0.01)
    assert proc.poll() is None, "the driver finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 3 <= committed(job) < ROWS
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{ROWS - 3} chunks run, 3 resumed" in resumed.stdout or " 0 resumed" not in resumed.stdout
    assert (tmp_path / "project" / "out" / "reviews.parquet").read_bytes() == expected
    assert len(list((job / "shards").glob("*.parquet"))) == ROWS


PLUGIN_STEP = '''
import pandas as pd

from orchestra import Step, register_step


@register_step("words")
class Words(Step):
    def inputs(self, available, task):
        return ["text"]

    def adds(self, available, task):
        return ["words"]

    def run(self, batch, context):
        return pd.DataFrame({"words": batch["text"].str.split().str.len()}, index=batch.index)
'''


def test_python_api_on_ray_equals_local_with_user_code_shipped_to_the_actors(cluster, tmp_path):
    """LFs and a user step from files the actors never see, run through Pipeline.run(executor='ray')."""
    from orchestra.steps.lfs import load_module

    shutil.copy(EXAMPLES / "review_lfs.py", tmp_path / "my_lfs.py")
    (tmp_path / "my_step.py").write_text(PLUGIN_STEP)
    words = load_module(str(tmp_path / "my_step.py")).Words
    data = pd.read_csv(EXAMPLES / "inputs" / "reviews.csv").rename(columns={"label": "gold"})
    task = Task("reviews", ["negative", "positive"], "{text}")
    steps = [words(), LabelingFunctions(str(tmp_path / "my_lfs.py")), LabelModelStep()]
    local = Pipeline(steps).run(data, task=task, chunk_size=10)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        from orchestra.ray_executor import RayExecutor

        assert RayExecutor()._sizes(ray) == (2, 1), "by default one actor per node CPU share, never across nodes"
        seen = []
        remote = Pipeline(steps).run(data, task=task, chunk_size=10, executor="ray",
                                     on_chunk=lambda done, total: seen.append(done))
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(local, remote)
    assert len(seen) == 5 and seen[-1] == len(data), "on_chunk counts rows as chunks come back"
    assert (remote["words"] == data["text"].str.split().str.len()).all()


def test_a_loaded_engine_cannot_go_to_ray_and_ray_flags_need_the_ray_executor(llm, cli, tmp_path):
    data = pd.read_csv(EXAMPLES / "inputs" / "reviews.csv").head(2)
    from orchestra import PromptStep

    with pytest.raises(OrchestraError, match="EngineRecipe"):
        Pipeline([PromptStep()]).run(data, engine=llm, task=Task("t", ["negative", "positive"]), executor="ray")
    yaml_path = make_project(tmp_path / "project")
    done = cli("run", str(yaml_path), "--address", "127.0.0.1:1")
    assert done.returncode == 2 and "go with --executor ray" in done.stderr
    assert not (tmp_path / "project" / "out").exists()


def test_without_ray_installed_the_error_says_how_to_install_it(tmp_path):
    """A Python with ray hidden from imports (the core install) gets the install hint and exit code 2."""
    yaml_path = make_project(tmp_path / "project")
    hide = "import sys; sys.modules['ray'] = None; from orchestra.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", hide, "run", str(yaml_path), "--executor", "ray"], cwd=ROOT,
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "pip install 'orchestra[ray]'" in done.stderr


def test_bad_input_with_the_ray_executor_exits_2_before_ray_starts(cli, tmp_path):
    yaml_path = make_project(tmp_path / "project")
    yaml_path.write_text(yaml_path.read_text().replace("- label_model:", "- label_modl:"))
    with open(tmp_path / "project" / "reviews.csv", "a") as handle:
        handle.write("1,duplicate id,1\n")
    before = sorted(p.name for p in (tmp_path / "project").rglob("*"))
    done = cli("run", str(yaml_path), "--executor", "ray", "--num-actors", "2")
    assert done.returncode == 2, done.stderr
    assert "unknown step 'label_modl'" in done.stderr and "ids in column 'id' repeat" in done.stderr
    assert "Ray" not in done.stderr, "no Ray instance was started"
    assert sorted(p.name for p in (tmp_path / "project").rglob("*")) == before


def test_gpu_engines_reserve_gpus_and_a_cluster_without_gpus_says_so(cluster, tmp_path):
    """On this CPU-only cluster: a CUDA engine recipe is refused before any actor starts, naming the fix; the
    default device ("auto") and "cpu" reserve no GPU; an explicit GPU share is validated."""
    from orchestra import PromptStep
    from orchestra.executors import EngineRecipe
    from orchestra.ray_executor import RayExecutor

    data = pd.read_csv(EXAMPLES / "inputs" / "reviews.csv").head(4)
    task = Task("reviews", ["negative", "positive"], "{text}")
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        for device in ("auto", "cpu"):
            executor = RayExecutor(engine=EngineRecipe(options={"device": device}))
            assert executor._gpus(ray, needs_engine=True) == (0.0, [0.0, 0.0])
        recipe = EngineRecipe(options={"device": "cuda"})
        with pytest.raises(OrchestraError, match="largest Ray node has 0; start the cluster on GPU nodes"):
            Pipeline([PromptStep()]).run(data, task=task, engine=recipe, executor="ray")
        assert ray.available_resources().get("CPU") == ray.cluster_resources().get("CPU"), "no actor holds CPUs"
        with pytest.raises(OrchestraError, match="largest Ray node has 0"):
            RayExecutor(gpus_per_actor=0.5)._gpus(ray, needs_engine=False)
    finally:
        ray.shutdown()
    with pytest.raises(OrchestraError, match="gpus_per_actor must be a number >= 0"):
        RayExecutor(gpus_per_actor=-1)
