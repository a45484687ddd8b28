"""One Ray instance for the whole test session (starting Ray takes 5-9 s), shut down at the end."""

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The tests choose the clusters they join; a developer's own exported address must not.
for _name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
    os.environ.pop(_name, None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from lrsweep import errors  # noqa: E402  (after the environment above)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_DATA = os.path.join(REPO, "tests", "data")


_GIVEN = set()


def free_port():
    """A port free now that nothing binding port 0 can be given before the cluster binds it:
    below the kernel's ephemeral range (where Ray's own servers get theirs; an ephemeral port
    given to the dashboard agent was once taken first, and the agent served no jobs) and above
    Ray's worker ports (10002-19999); never the same one twice."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral = int(f.read().split()[0])
    for port in random.sample(range(20000, ephemeral), ephemeral - 20000):
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free port between 20000 and {ephemeral}")


def lrsweep(*args, env=None, timeout=300):
    """`python -m lrsweep ARGS` from the repository, as a user runs it. `env` adds to this
    process's environment; a None value takes a variable out. A command still running after
    `timeout` seconds fails the test with what it printed and where it was stuck (`stacks`)."""
    env = {name: value for name, value in {**os.environ, **(env or {})}.items() if value is not None}
    command = subprocess.Popen([sys.executable, "-m", "lrsweep", *args], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = command.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stuck = stacks(command.pid)
        command.kill()
        out, err = command.communicate()
        pytest.fail(f"`lrsweep {' '.join(args)}` still ran after {timeout} s. It had printed:\n{out[-3000:]}\n"
                    f"and on stderr:\n{err[-3000:]}\n{stuck}", pytrace=False)
    return subprocess.CompletedProcess(command.args, command.returncode, out, err)


def stacks(pid):
    """Where the threads of process `pid` and of this session's Ray processes are (by
    py-spy, as `ray stack` finds them): the command, and what it waits for on a test
    cluster started here (a launch run through Ray Client, its trials, the trainers)."""
    import shutil

    spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if spy is None:
        return "(py-spy, which would show where each process was, is not installed)"
    running = processes()
    names = {other: name for other, (_, name) in running.items()}
    chosen = [pid] + [other for other, (_, name) in descendants(os.getpid(), running).items() if other != pid and (
        name.startswith("ray::") and not name.startswith(("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent"))
        or "lrsweep launch" in name)]
    said = []
    for other in chosen:
        try:
            dump = subprocess.run([spy, "dump", "--pid", str(other)], capture_output=True, text=True, timeout=60)
            dump = dump.stdout + dump.stderr
        except subprocess.TimeoutExpired:
            dump = "(py-spy did not answer in 60 s)"
        said.append(f"--- process {other} ({names.get(other, '?')[:120]}):\n{dump[:6000]}")
    return "\n".join(said)


def processes():
    """{process id: (its parent's id, its command line)} of every process on this machine
    (Linux's /proc), but those that end as it looks."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"{entry.path}/cmdline", "rb") as f:
                found[int(entry.name)] = parent, f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError, ValueError):
            continue
    return found


def descendants(pid, running=None):
    """{process id: (parent id, command line)} of the processes `pid` started, and theirs,
    among `running` (`processes()`, read now if not given)."""
    found, running = {}, processes() if running is None else running
    while True:
        more = {p: entry for p, entry in running.items() if entry[0] in {pid, *found} and p not in found}
        if not more:
            return found
        found.update(more)


def lrsweep_read_until(until, *args, timeout=180):
    """`python -m lrsweep ARGS` whose output's reader stops reading, as `| head` does, once
    it has read a line for which `until(line)` holds, or (`until` None) before it has read
    any, as `| true` does: (exit status, the lines read, stderr)."""
    command = subprocess.Popen([sys.executable, "-m", "lrsweep", *args], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    try:
        while until is not None and not (lines and until(lines[-1])):
            lines.append(command.stdout.readline())
            assert lines[-1], "".join(lines)[-1000:] + command.stderr.read()[-2000:]  # it ended before that line
        command.stdout.close()
        stderr = command.stderr.read()
        command.wait(timeout=timeout)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
    return command.returncode, lines, stderr


def waiting_launch_warning(tmp_path, address, resources, marker):
    """`launch --address address` of a one-trial sweep whose trials ask for `resources` (more
    than the cluster can give them), stopped by Ctrl-C once it has warned with a line holding
    `marker`: (that line, the launch's exit status)."""
    sweep_file = tmp_path / "waiting.py"
    sweep_file.write_text(f"from lrsweep import Sweep\nSWEEP = Sweep(name='waiting', dataset='digits', configs=["
                          f"{{'family': 'constant', 'initial_lr': 0.1}}], max_epochs=2, resources={resources!r})\n")
    results = tmp_path / "results"
    launch = subprocess.Popen([sys.executable, "-m", "lrsweep", "launch", str(sweep_file), "--results", str(results),
                               "--address", address], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(launch.stderr), daemon=True)  # to its end
    reader.start()
    try:
        wait_for(lambda: any(marker in line for line in lines), 120, "the launch gave no warning")
        launch.send_signal(signal.SIGINT)
        launch.wait(timeout=120)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
    return next(line for line in lines if marker in line).strip(), launch.returncode


def assert_refused(done, *words, stdout=""):
    """Bad input as every command answers it: exit 2, one line on stderr (no traceback) naming
    each of `words`, nothing on stdout (or `stdout`)."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("lrsweep: error:"), done.stderr[-2000:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert done.stdout == stdout, done.stdout[-2000:]


def tune_trials(experiment):
    """{trial id: status} of the trials in Tune's experiment state as saved in folder
    `experiment`; None where no saved state is there to read."""
    saved = sorted(experiment.glob("experiment_state-*.json"))
    try:
        trials = [json.loads(state) for state, _ in json.loads(saved[-1].read_text())["trial_data"]]
    except (IndexError, ValueError, OSError):  # none yet, or caught mid-copy
        return None
    return {trial["trial_id"]: trial["status"] for trial in trials}


def tune_finished(experiment):
    """The trials that Tune's experiment state, as saved in folder `experiment`, holds done
    (`--resume` does not run them again), and whether a saved state was there to read."""
    trials = tune_trials(experiment)
    return {trial_id for trial_id, status in (trials or {}).items() if status == "TERMINATED"}, trials is not None


# The environment of a test's own `ray start --block`: on SIGTERM it drains its node first,
# waiting up to 30 s (Ray 2.60) for every worker lease to end, which lrsweep's trainers (idle
# detached actors) do only when they stop.
RAY_START_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def stop_ray_start(process, timeout=60):
    """Stop a `ray start --block` of a test's own (started with `RAY_START_ENV`), and what it
    started: SIGTERM to that process, whose handler stops Ray's processes in turn (SIGTERM to
    its whole process group took 33 s: the raylet and GCS, signalled at once, left its drain
    to wait out its timeout); then SIGKILL to whatever of the group is left."""
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # nothing of it left
        pass
    process.wait()


def wait_for(condition, seconds, what, every=0.5):
    """Poll `condition` until it holds; fail with `what` after `seconds`."""
    import time

    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, what
        time.sleep(every)


@pytest.fixture(autouse=True)
def each_test_a_command():
    """lrsweep says each warning once per command (`errors.warn`); a test is a command of
    its own, however many ran before it in this process."""
    errors._warned.clear()


@pytest.fixture
def ray_dir():
    """A folder for RAY_TMPDIR, where a Ray that a command starts keeps its session (empty:
    none started), short as Ray's socket paths must be; removed after the test."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="lrsweep-ray-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with two CPUs and one logical GPU (the test machines have none), shared by
    every test that runs a sweep in this process; its GCS address lets a `launch --address`
    subprocess join it."""
    import ray

    context = ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, configure_logging=True,
                       logging_level="WARNING")
    yield context.address_info["gcs_address"]
    from lrsweep.run.driver import stop_ray

    stop_ray()


def trainers(cpus):
    """{name: actor id} of this code's trainers for trials of `cpus` CPUs, alive now."""
    import ray

    from lrsweep.run.pool import NAMESPACE, code_key

    pattern = rf"trainer-{re.escape(code_key())}-\w+-cpu{re.escape(f'{cpus:g}')}-\d+"
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == NAMESPACE and re.fullmatch(pattern, a["name"])]
    found = {}
    for name in names:
        try:
            found[name] = ray.get_actor(name, namespace=NAMESPACE)._actor_id.hex()
        except ValueError:  # it ended as we looked
            pass
    return found
