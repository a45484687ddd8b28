"""Warm trainers (`lrsweep.run.pool`) on the session's Ray: they outlive a launch and serve
the next one, a trainer killed mid-trial costs that trial one retry, and an idle trainer
ends itself. The launches run as a user's would, `launch --address` in a process of their
own, so each is a Ray job that ends before the next starts."""

import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from lrsweep.results.store import read_frame
from lrsweep.run.pool import NAMESPACE
from tests.conftest import REPO, TEST_DATA, lrsweep, trainers, wait_for


def sweep_file(tmp_path, name, **settings):
    """A sweep of trials of two CPUs each on the digits data: one trainer per node serves it
    (the session's other sweeps use one CPU a trial, and their trainers stay out of it)."""
    path = tmp_path / f"{name}.py"
    args = ", ".join(f"{key}={value!r}" for key, value in settings.items())
    path.write_text(f"from lrsweep import Sweep\nSWEEP = Sweep(name={name!r}, dataset='digits', "
                    f"resources={{'cpu': 2}}, early_stopping=None, confirm_seeds=0, {args})\n")
    return str(path)


# A trainer of these tests ends 3 s after its last trial, so that each test starts without one.
IDLE = {"LRSWEEP_TRAINER_IDLE_SECONDS": "3"}


def settled(read, seconds=30):
    """`read()` once it gives the same twice in a row, a second apart."""
    last = read()
    for _ in range(seconds):
        time.sleep(1)
        last, before = read(), last
        if last == before:
            return last
    raise AssertionError(f"still changing after {seconds} s")


def objects_stored(address):
    """How many objects the (one-node) cluster's object store holds."""
    from ray._private.internal_api import memory_summary

    return int(re.search(r"Plasma memory usage .*?, (\d+) objects", memory_summary(address, stats_only=True)).group(1))


def test_a_second_launch_on_a_running_cluster_trains_on_the_trainers_the_first_left(ray_session, tmp_path):
    """The service case: the first launch's trainers are still alive after it ended, with
    TensorFlow imported, and the next launch's trials train on them: no new trainer. Each
    launch's dataset leaves the object store as the launch ends, though the trainers that
    read it stay (they held every launch's dataset until they ended: a few launches of a
    600 MB dataset filled the store)."""
    args = ["launch", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--num-samples", "4", "--max-epochs", "6",
            "--confirm-seeds", "0", "--address", ray_session]
    stored = settled(lambda: objects_stored(ray_session))  # an earlier test's launch may be freeing its own
    first = lrsweep(*args, "--results", str(tmp_path / "first"))
    assert first.returncode == 0, first.stderr[-2000:]
    left = trainers(1)
    # one per trial slot of the session's two CPUs; a third may be left by an earlier test (a
    # launch that found a killed launch's trainers still busy started one beside them)
    assert {name.rsplit("-", 1)[1] for name in left} >= {"0", "1"}
    second = lrsweep(*args, "--results", str(tmp_path / "second"))
    assert second.returncode == 0, second.stderr[-2000:]
    assert trainers(1) == left
    # (Ray frees an ended driver's objects within a second or so)
    wait_for(lambda: objects_stored(ray_session) <= stored, 30, "the launches' datasets are still in the object store")
    trials = read_frame(str(tmp_path / "second"), "trials")
    assert len(trials) == 4 and set(trials["status"]) <= {"completed", "early_stopped"}


def kill_the_trainer_mid_trial(driver, ready):
    """SIGKILL of the one trainer of trials of two CPUs once `ready()`, while `driver` (a
    launch) runs; returns the time of the kill, the trainer's name and its actor id."""
    import ray

    wait_for(lambda: ready() or driver.poll() is not None, 180, "no epoch stored, or no checkpoint saved")
    assert driver.poll() is None, "the trial ended before its trainer could be killed"
    (name, actor_id), = trainers(2).items()
    pid = ray.get(ray.get_actor(name, namespace=NAMESPACE).__ray_call__.remote(lambda self: os.getpid()))
    killed = pd.Timestamp.now(tz="UTC")
    os.kill(pid, signal.SIGKILL)
    return killed, name, actor_id


def long_trial_launch(tmp_path, results, *args, **settings):
    """`launch` of one 300-epoch trial of two CPUs, in a process group of its own."""
    sweep = sweep_file(tmp_path, "killed", max_epochs=300, configs=[{"family": "constant", "initial_lr": 0.01}],
                       **settings)
    return subprocess.Popen([sys.executable, "-m", "lrsweep", "launch", sweep, "--results", str(results), *args],
                            cwd=REPO, env={**os.environ, **IDLE}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def checkpoint_saved(results):
    return lambda: list(results.glob("tune/*/*/checkpoint_*/model.weights.h5"))


def assert_trained_once_to_the_end(results, killed, went_on):
    """The store holds the one trial completed, each of its 300 epochs once; its first epoch
    and its start are the first attempt's if it `went_on` from a checkpoint, else after the
    kill; no checkpoint of it is left."""
    trials, epochs = read_frame(str(results), "trials"), read_frame(str(results), "epochs")
    assert len(trials) == 1 and trials["status"].iloc[0] == "completed" and trials["epochs"].iloc[0] == 300
    assert sorted(epochs["epoch"]) == list(range(1, 301))
    assert (epochs.loc[epochs["epoch"] == 1, "end_time"].iloc[0] < killed) == went_on
    assert (trials["start_time"].iloc[0] < killed) == went_on
    assert pd.isna(trials["resumed_from"].iloc[0]) != went_on
    assert not list(results.glob("tune/*/*/checkpoint_*"))  # a trial that ended needs them no more


@pytest.mark.parametrize("checkpoint_seconds", [None, 1])
def test_a_trainer_killed_mid_trial_costs_that_trial_one_retry(ray_session, tmp_path, checkpoint_seconds):
    """SIGKILL of the trainer process while it trains: the trial fails, Tune trains it again
    (max_failures) on a new trainer, from its last checkpoint if it saved one, else from
    the start; the launch ends well, and the store holds the trial once, with every epoch
    once, its first start kept where it went on from a checkpoint. Tune's warnings about
    saving its state often are not the user's business."""
    wait_for(lambda: not trainers(2), 60, "a trainer of an earlier test did not end")
    results = tmp_path / "results"
    driver = long_trial_launch(tmp_path, results, "--address", ray_session, max_failures=1,
                               checkpoint_seconds=checkpoint_seconds)
    try:
        killed, name, actor_id = kill_the_trainer_mid_trial(
            driver, checkpoint_saved(results) if checkpoint_seconds else lambda: list(results.glob("epochs/*/*/*")))
        # the retry's trainer, a new one; looked up while the retry trains (it ends 3 s after it)
        wait_for(lambda: trainers(2).get(name) not in (None, actor_id) or driver.poll() is not None, 180,
                 "no new trainer")
        retried_on = trainers(2).get(name)
        stdout, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, stderr[-3000:]
    assert retried_on not in (None, actor_id)
    # a checkpoint every second: Tune saves its state at every second one, and its warning
    # about that (naming its own settings, not the sweep's) stays out of the output
    assert "snapshotting has been triggered multiple times" not in stdout + stderr
    assert_trained_once_to_the_end(results, killed, went_on=bool(checkpoint_seconds))


def test_a_trial_that_failed_after_a_checkpoint_goes_on_from_it_on_resume(ray_session, tmp_path):
    """No retry (max_failures=0): the trainer killed after the trial's first checkpoints ends
    the trial in `error` and the launch with exit 1; `--resume` trains the trial again from
    its checkpoint (Tune's `resume_errored`) to its end, and the store then holds it
    completed, with every epoch once and its first start."""
    wait_for(lambda: not trainers(2), 60, "a trainer of an earlier test did not end")
    results = tmp_path / "results"
    args = ("--address", ray_session, "--name", "failed")
    driver = long_trial_launch(tmp_path, results, *args, max_failures=0, checkpoint_seconds=1)
    try:
        killed, _, _ = kill_the_trainer_mid_trial(driver, checkpoint_saved(results))
        driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 1
    assert list(read_frame(str(results), "trials")["status"]) == ["error"]
    done = lrsweep("launch", str(tmp_path / "killed.py"), "--results", str(results), *args, "--resume",
                   env=IDLE)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_trained_once_to_the_end(results, killed, went_on=True)


def test_a_trial_looks_for_a_trainer_among_every_trial_slot_of_its_node(ray_session):
    """A node of more trial slots than 64 (96 CPUs, trials of one): a trial found every one
    of the first 64 trainers busy, and failed with "no free trainer", while trainer 64 and
    up, which `warm` had started, stood idle."""
    import ray

    from lrsweep.run import pool

    node, cpus = ray.get_runtime_context().get_node_id(), ray.cluster_resources()["CPU"]
    assert pool._looked_at(node, cpus / 128) == 128  # 128 slots of a 128th of its CPUs each
    assert pool._looked_at(node, cpus) == pool.LOOKED_AT  # one slot: 64 still (trainers that ended meanwhile)
    # counted as Ray counts, in 1e-4 units: 8 CPUs run 80 trials of 0.1 (8 // 0.1 is 79.0)
    assert pool._looked_at(node, 0.01) == round(cpus * 100)
    assert pool.slots(8, 0.1) == 80 and pool.slots(7, 0.7) == 10 and pool.slots(2, 0.3) == 6


@pytest.mark.parametrize("nodes, resources, fits, warnings", [
    # trials of 0.6 CPU on two one-CPU nodes: one each (the cluster's 2 CPUs would hold 3)
    ([{"CPU": 1}, {"CPU": 1}], {"cpu": 0.6}, [1, 1], []),
    # half a card each where the cards are, a node without CPUs (a head of --num-cpus=0) none
    ([{"CPU": 4, "GPU": 1}, {"CPU": 8}, {}], {"cpu": 1, "gpu": 0.5}, [2, 0, 0], []),
    ([{"CPU": 1}, {"CPU": 1}], {"cpu": 2}, [0, 0],
     ["the trials ask for 2 CPUs each, and no node of the cluster joined has that many now (the largest has 1, 2 in "
      "all; a trial runs on one node)"]),
    ([{"CPU": 2}, {"CPU": 2}], {"cpu": 4, "gpu": 1}, [0, 0],
     ["the trials ask for 4 CPUs each, and no node of the cluster joined has that many now (the largest has 2, 4 in "
      "all; a trial runs on one node)", "the trials ask for 1 GPU each, and the cluster joined has 0 now"]),
    ([{"CPU": 4}, {"CPU": 1, "GPU": 1}], {"cpu": 2, "gpu": 1}, [0, 0],
     ["the trials ask for 2 CPUs and 1 GPU each, and no node of the cluster joined has both now (a trial runs on "
      "one node)"]),
])
def test_trials_are_counted_and_placed_node_by_node(nodes, resources, fits, warnings, capsys):
    """Ray places each trial on one node: the trials a cluster runs at once are counted node
    by node (Tune's max_concurrent_trials), and a launch on a cluster where no node can hold
    a trial says, for each of CPUs and GPUs, what is short, and that its trials wait."""
    from lrsweep import Sweep
    from lrsweep.run import driver

    sweep = Sweep(name="s", dataset="digits", configs=[{"family": "constant", "initial_lr": 0.1}], resources=resources)
    assert driver.node_trial_slots(sweep, nodes) == fits
    if not sum(fits):
        driver.no_node_fits(sweep, False, nodes)
    said = capsys.readouterr().err.splitlines()
    wait = ": they wait for nodes its autoscaler adds (forever, where it adds none)"
    assert said == [f"lrsweep: warning: {warning}{wait}" for warning in warnings]


def test_an_idle_trainer_ends_itself(ray_session, tmp_path):
    """A trainer holds a TensorFlow process's memory: one idle for LRSWEEP_TRAINER_IDLE_SECONDS
    ends itself (a driver's setting, passed to the trainers its trials use)."""
    wait_for(lambda: not trainers(2), 60, "a trainer of an earlier test did not end")
    # 15 s idle: long enough that the trainer is still there once the launch has ended
    done = lrsweep("launch", sweep_file(tmp_path, "idle", max_epochs=2, configs=[{"family": "constant",
                                                                                  "initial_lr": 0.01}]),
                   "--results", str(tmp_path / "results"), "--address", ray_session,
                   env={"LRSWEEP_TRAINER_IDLE_SECONDS": "15"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(read_frame(str(tmp_path / "results"), "trials")) == 1
    assert trainers(2), "the launch left no trainer"
    wait_for(lambda: not trainers(2), 60, "the idle trainer is still there")


def test_a_trainer_starts_without_what_keras_imports_for_features_a_trial_never_uses():
    """A trainer's start (`pool.Trainer` runs `trial.warm_up`) is on a cold launch's way to
    its first epoch: Keras imports scikit-learn, matplotlib and pandas (with pyarrow) when
    they are installed, for its scikit-learn wrappers, its galleries and `fit` on a
    DataFrame, seconds of CPU on two cores. They stay out, and import as usual afterwards."""
    probe = ("import sys; import lrsweep.run.pool; from lrsweep.run import trial; trial.warm_up(1); "
             "print(sorted(m for m in ('sklearn', 'matplotlib', 'pandas', 'pyarrow') if m in sys.modules)); "
             "import pandas, sklearn, matplotlib; print('imported')")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "imported"], done.stdout


def test_a_trainer_whose_trial_data_never_arrives_gives_the_trial_up_and_ends(ray_session):
    """A trainer waiting on a trial's dataset reference that never resolves (seen once in
    CI: a resumed launch waited for good on one trial) gives the trial up after its data
    wait, with a line saying what happened, takes no other trial, and ends, so that Tune's
    retry of the trial trains on a new trainer. Here the reference is the result of a
    call that never returns, handed to a trainer of its own, with a wait of 3 s (the
    driver's `data_seconds`, two minutes and more for a large dataset)."""
    import ray

    from lrsweep.run.pool import CONCURRENCY, Trainer

    @ray.remote(num_cpus=0)
    class Never:
        def answer(self):
            time.sleep(3600)

    never = Never.remote()
    trainer = ray.remote(Trainer).options(num_cpus=0, max_concurrency=CONCURRENCY).remote(1, 60.0)
    try:
        claimant = never._actor_id.hex()
        setup = {"data_seconds": 3}
        assert ray.get(trainer.start.remote("first", claimant, {}, [never.answer.remote()], setup, {}), timeout=120)
        late = "the dataset's arrays did not come from Ray's object store in 3 s; the trainer ends"
        with pytest.raises(ray.exceptions.RayTaskError, match=late):
            for _ in range(60):  # each call waits up to 1 s for a report
                ray.get(trainer.reports.remote("first", 1.0), timeout=30)
        with pytest.raises(ray.exceptions.RayActorError):
            for _ in range(60):  # refused while it ends, then gone
                assert not ray.get(trainer.start.remote("second", claimant, {}, [ray.put({})], setup, {}), timeout=30)
                time.sleep(0.5)
    finally:
        ray.kill(never)
        ray.kill(trainer)


def test_a_trainer_lets_go_of_the_models_it_kept_for_another_sweep(ray_session, tmp_path):
    """A trainer keeps the compiled models of the sweep it serves (frozen out of Python's
    collections, `trial.fresh_session`); once it trains a trial of another sweep, those models
    are freed. They were not: a trainer grew 12-15 MB at each change of sweep, for good."""
    import ray

    def launch(sweep, name):
        done = lrsweep("launch", sweep, "--data-dir", TEST_DATA, "--num-samples", "6", "--max-epochs", "3",
                       "--confirm-seeds", "0", "--results", str(tmp_path / name), "--address", ray_session)
        assert done.returncode == 0, done.stderr[-2000:]

    def on_each_trainer(call, names):
        return {name: ray.get(ray.get_actor(name, namespace=NAMESPACE).__ray_call__.remote(call), timeout=60)
                for name in names}

    def watch(self):  # weak references to the models this trainer keeps now
        import weakref

        self.watched, self.watched_for = [weakref.ref(e["model"]) for e in self.kept.values()], self.kept_for
        return len(self.watched)

    launch("sweeps/ionosphere.py", "first")
    watched = trainers(1)  # (a trainer ends only after 900 s unused)
    assert sum(on_each_trainer(watch, watched).values()) > 0
    launch("sweeps/digits.py", "second")
    after = on_each_trainer(lambda self: (self.kept_for != self.watched_for, [r() is None for r in self.watched]),
                            watched)
    assert any(switched for switched, _ in after.values())  # the second sweep trained on a trainer of the first
    assert all(all(freed) for switched, freed in after.values() if switched), after


@pytest.mark.parametrize("resources, said", [
    ({"cpu": 4}, "asks for 4 CPUs per trial, and the Ray this launch starts has 2 (this machine's)"),
    ({"cpu": 1, "gpu": 0.5}, "asks for 0.5 GPUs per trial, and the Ray this launch starts has 0 (this machine's)"),
])
def test_trials_larger_than_a_ray_of_the_launchs_own_are_refused(resources, said):
    """On the one node of a Ray the launch starts, nothing can add more: refused, as bad input,
    before Ray starts (`check_local_fit`) or, where Ray counted otherwise, once it has."""
    from lrsweep import Sweep
    from lrsweep.errors import LrsweepError
    from lrsweep.run import driver

    sweep = Sweep(name="s", dataset="digits", configs=[{"family": "constant", "initial_lr": 0.1}], resources=resources)
    with pytest.raises(LrsweepError, match=re.escape(said)):
        driver.no_node_fits(sweep, True, [{"CPU": 2}])


@pytest.mark.parametrize("address, env, joins", [
    (None, None, False), ("local", None, False), ("", None, False), (None, "local", False),
    (None, "http://127.0.0.1:8265", False),  # the dashboard's, for `ray job`: not a cluster to join
    ("auto", None, True), ("127.0.0.1:6379", None, True), (None, "127.0.0.1:6379", True), ("local", "10.0.0.1:6379", False),
])
def test_a_launch_joins_the_cluster_it_is_given_and_starts_its_own_ray_otherwise(address, env, joins, monkeypatch):
    """What `joins_cluster` says is what `_ray_address` does: its own Ray for no address, ""
    and "local" (from --address or RAY_ADDRESS), a cluster for any other."""
    from lrsweep.run import driver

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if env is not None:
        monkeypatch.setenv("RAY_ADDRESS", env)
    monkeypatch.setattr(driver, "use_token_if_present", lambda: None)  # this process's Ray settings stay
    assert driver.joins_cluster(address) == joins
    assert (driver._ray_address(address) != "local") == joins
