"""`submit`, `status` and `logs` against a long-running Ray with its dashboard (`ray start
--head`), as a user runs them from the repository.

The cluster runs in a process group of its own (`ray start --block`) and is stopped by
signalling that group: `ray stop` would also stop the Ray the other tests share.
"""

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest

from tests.conftest import (REPO, TEST_DATA, assert_refused, descendants, free_port, lrsweep, lrsweep_read_until,
                            processes, RAY_START_ENV, stop_ray_start, tune_finished, wait_for, waiting_launch_warning)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """The cluster's addresses: its dashboard's (for the job commands) and its Ray Client
    server's (ray://, for `launch`)."""
    port, client_port, gcs_port = free_port(), free_port(), free_port()
    bin_dir = os.path.dirname(sys.executable)
    # The job's entrypoint runs `python` from the cluster's PATH: this environment's.
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), **RAY_START_ENV}
    head = subprocess.Popen([os.path.join(bin_dir, "ray"), "start", "--head", "--block", f"--port={gcs_port}",
                             f"--dashboard-port={port}", f"--dashboard-agent-listen-port={free_port()}",
                             f"--ray-client-server-port={client_port}", "--num-cpus=2", "--disable-usage-stats"],
                            cwd=tmp_path_factory.mktemp("head"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # 401 without the token: it is up
                break
            except OSError:
                if time.time() > deadline or head.poll() is not None:
                    raise RuntimeError("the test cluster's dashboard did not come up")
                time.sleep(1)
        yield {"dashboard": url, "client": f"ray://127.0.0.1:{client_port}", "gcs": f"127.0.0.1:{gcs_port}",
               "pid": head.pid}
    finally:
        stop_ray_start(head)


@pytest.fixture(scope="module")
def dashboard(head):
    return head["dashboard"]


def test_a_submitted_sweep_runs_as_a_job_that_submit_follows_to_its_end(dashboard, tmp_path):
    """`submit` follows the job's output to its end, as `ray job submit` does, and exits as
    the job ended. Paths relative to the folder `submit` runs in (here outside the job's
    uploaded copy of it) name the same places in the job."""
    results = tmp_path / "results"
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(os.path.join(TEST_DATA, "ionosphere.csv"), data)
    done = lrsweep("submit", "sweeps/ionosphere.py", "--address", dashboard, "--data-dir", os.path.relpath(data, REPO),
                   "--storage", os.path.relpath(tmp_path / "state", REPO), "--num-samples", "2", "--max-epochs", "5",
                   "--confirm-seeds", "0", "--seed", "3", "--results", str(results), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""
    # The warning of a --max-epochs too short for ionosphere.py's 5-epoch cosine warm-ups: once, in
    # the job's output (kept for `logs`), not also from the checks before the job
    warning = "lrsweep: warning: max_epochs=5: families['cosine'] draws `warmup_epochs` from {0} instead of {0, 5}"
    assert done.stdout.count(warning) == 1, done.stdout[-2000:]
    job = done.stdout.split()[1]
    assert job.startswith("raysubmit_")
    assert "1/2" in done.stdout and "2/2" in done.stdout  # the progress lines
    assert f"lrsweep rank --dataset ionosphere --results {results}" in done.stdout
    status = lrsweep("status", job, "--address", dashboard, timeout=60)
    assert status.returncode == 0 and status.stdout.startswith(f"{job}: SUCCEEDED")
    trials = pd.read_parquet(results / "trials")
    assert len(trials) == 2 and set(trials["status"]) <= {"completed", "early_stopped"}
    assert (trials["seed"] == 3).all()
    assert (tmp_path / "state" / trials["sweep"].iloc[0]).is_dir()  # Tune's state, for --resume
    # the whole log once more, without following
    logs = lrsweep("logs", job, "--address", dashboard, timeout=60).stdout
    assert "2/2" in logs and warning in logs


def test_submit_no_wait_returns_with_the_job_that_logs_follows(dashboard, tmp_path):
    """The job's launch also has the trainers' idle time of the shell that submitted it."""
    from lrsweep.run.jobs import jobs_client

    results = tmp_path / "results"
    done = lrsweep("submit", "sweeps/ionosphere.py", "--address", dashboard, "--data-dir", TEST_DATA, "--no-wait",
                   "--num-samples", "1", "--max-epochs", "5", "--confirm-seeds", "0", "--results", str(results),
                   env={"LRSWEEP_TRAINER_IDLE_SECONDS": "120"}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # the quick try's warning, here, where nothing else would show it now; and in the job's log
    warning = "lrsweep: warning: max_epochs=5: families['cosine'] draws `warmup_epochs` from {0} instead of {0, 5}"
    assert done.stderr.count(warning) == 1, done.stderr[-2000:]
    job = done.stdout.split()[1]
    assert job.startswith("raysubmit_") and f"lrsweep logs {job} --follow" in done.stdout
    runtime_env = jobs_client(dashboard).get_job_info(job).runtime_env
    assert runtime_env["env_vars"]["LRSWEEP_TRAINER_IDLE_SECONDS"] == "120"
    assert "1/1" not in done.stdout  # it did not wait for the trial
    # without --address (nor RAY_ADDRESS): the dashboard of the Ray `ray start` started here, on
    # whatever port, as Ray's own `ray job` finds it (it asked 8265, where none listens)
    followed = lrsweep("logs", job, "--follow", env={"RAY_ADDRESS": None, "RAY_API_SERVER_ADDRESS": None},
                       timeout=300)
    assert followed.returncode == 0, followed.stderr[-2000:]
    assert "1/1" in followed.stdout and "lrsweep rank --dataset ionosphere" in followed.stdout
    assert followed.stdout.count(warning) == 1
    assert len(pd.read_parquet(results / "trials")) == 1


def test_a_launch_sees_the_ray_that_ray_start_left_running_here(head):
    """`ray start --head`, then a `launch` without --address: it starts a Ray of its own
    beside that one, which competes for the cores, and warns (`_ray_started_here`)."""
    from lrsweep.run.driver import _ray_started_here

    running = _ray_started_here()
    assert running and running.rsplit(":", 1)[1] == head["gcs"].rsplit(":", 1)[1], running


def test_a_stopped_job_ends_as_on_ctrl_c_and_gives_the_submit_that_finishes_it(dashboard, tmp_path):
    """`ray job stop` sends the launch SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S
    (Ray's default 3 s, which could cut Tune's last save short: the job's is 60). The launch
    ends as on Ctrl-C, and the command it gives to finish the run is the `submit` the user
    typed, with the run's name (it gave the job's own `launch`, which runs a sweep here, not
    on the cluster)."""
    from ray.job_submission import JobStatus

    from lrsweep.run.jobs import jobs_client

    typed = ["submit", "sweeps/ionosphere.py", "--address", dashboard, "--data-dir", TEST_DATA, "--no-wait",
             "--num-samples", "30", "--max-epochs", "30", "--confirm-seeds", "0", "--results", str(tmp_path / "r")]
    done = lrsweep(*typed, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    job, client = done.stdout.split()[1], jobs_client(dashboard)
    assert client.get_job_info(job).runtime_env["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"] == "60"
    wait_for(lambda: "1/30" in client.get_job_logs(job), 180, "no trial of the job ended")
    client.stop_job(job)
    wait_for(lambda: client.get_job_status(job) == JobStatus.STOPPED, 90, "the job did not stop")
    output = client.get_job_logs(job)
    hint = next((line for line in output.splitlines() if "this finishes it: lrsweep " in line), None)
    assert hint, output[-2000:]
    again = shlex.split(hint.split("this finishes it: lrsweep ", 1)[1])
    assert again[:-3] == typed and again[-3] == "--name" and again[-1] == "--resume", hint
    # a resume of it with another --max-epochs: refused here, before a job, as `launch --resume`
    # refuses it (the head is this machine): it was a job that failed, exit 1
    jobs = len(client.list_jobs())
    changed = lrsweep(*typed, "--max-epochs", "20", "--name", again[-2], "--resume", timeout=120)
    assert_refused(changed, "`max_epochs` (--max-epochs)", "was launched with, 30,", "max_epochs=20")
    assert len(client.list_jobs()) == jobs


def test_logs_follow_reads_on_where_the_dashboards_job_module_restarts(head, tmp_path):
    """Ray's stream of a job's output ends before the job where the dashboard's job module
    restarts (ray-project/ray#51601), and the dashboard answers 500 until it is back: here
    that module's process is killed (SIGKILL) while `logs --follow` streams, and the dashboard
    starts it again. The command reads the rest from the job's whole output: every line
    once, nothing lost, and it exits as the job ended."""
    dashboard = head["dashboard"]
    done = lrsweep("submit", "sweeps/ionosphere.py", "--address", dashboard, "--data-dir", TEST_DATA, "--no-wait",
                   "--num-samples", "6", "--max-epochs", "30", "--confirm-seeds", "0", "--results",
                   str(tmp_path / "results"), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    job = done.stdout.split()[1]
    followed = subprocess.Popen([sys.executable, "-m", "lrsweep", "logs", job, "--follow", "--address", dashboard],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    try:
        first = ""  # up to the launch's first line, streamed: the job trains on
        while not first.endswith("\n") or not first.splitlines()[-1].startswith("sweep "):
            line = followed.stdout.readline()
            assert line, first + followed.stderr.read()[-2000:]  # it ended before that line
            first += line
        module = [pid for pid, (_, command) in descendants(head["pid"]).items()
                  if command.startswith("ray-dashboard-JobHead-")]
        assert len(module) == 1, descendants(head["pid"])
        os.kill(module[0], signal.SIGKILL)
        rest = []  # read on from the pipe's buffer (`communicate` would skip what it holds)
        reader = threading.Thread(target=lambda: rest.append(followed.stdout.read()), daemon=True)
        reader.start()
        followed.wait(timeout=300)
        reader.join(timeout=60)
        rest, stderr = "".join(rest), followed.stderr.read()
    finally:
        if followed.poll() is None:
            os.killpg(followed.pid, signal.SIGKILL)
    assert followed.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    whole = lrsweep("logs", job, "--address", dashboard, timeout=60)
    assert whole.returncode == 0 and first + rest == whole.stdout
    assert "6/6" in rest and "lrsweep rank --dataset ionosphere" in rest
    assert any(command.startswith("ray-dashboard-JobHead-") for _, command in descendants(head["pid"]).values())


def test_submit_through_a_forwarded_port_leaves_the_checks_of_the_heads_paths_to_the_head(dashboard, tmp_path):
    """http://127.0.0.1:8265 may be a remote head's dashboard forwarded here (`ray dashboard
    cluster.yaml`, ssh -L): where its Ray session is not on this machine (here: Ray's
    temporary folder elsewhere, as on another machine), the store and Tune's state are the
    head's, checked by the launch there, not refused here. A --resume of a run this machine
    does not hold is then the job's error; with the head here, it is bad input at once."""
    args = ["submit", "sweeps/ionosphere.py", "--address", dashboard, "--data-dir", TEST_DATA, "--resume",
            "--name", "not-here", "--results", str(tmp_path / "results")]
    assert_refused(lrsweep(*args, timeout=120), "names no sweep that can be resumed", "not-here")
    elsewhere = tmp_path / "another-machine"
    elsewhere.mkdir()
    done = lrsweep(*args, env={"RAY_TMPDIR": str(elsewhere)}, timeout=300)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.startswith("submitted raysubmit_")
    assert "lrsweep: error: Argument `name` names no sweep that can be resumed" in done.stdout  # the job's own line


def test_the_head_is_this_machine_where_its_ray_session_or_client_server_is_here(head, monkeypatch, tmp_path):
    """A loopback address is this machine's head only where that head's Ray runs here: its
    dashboard's session folder, its Ray Client server's process; another port (a tunnel to
    a remote head, say) is not, whatever else runs here."""
    from lrsweep.run.jobs import on_this_machine

    assert on_this_machine(head["dashboard"]) and on_this_machine(head["client"])
    assert not on_this_machine(f"ray://127.0.0.1:{free_port()}")
    assert not on_this_machine(f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # as on a machine where that session is not
    assert not on_this_machine(head["dashboard"])


@pytest.mark.parametrize("flags, lines, said", [([], 1, "stopped following"), ([], 0, "stopped following"),
                                                (["--no-wait"], 0, "submitted")])
def test_submit_whose_output_reader_stops_reading_stops_following_and_the_job_goes_on(dashboard, tmp_path, flags,
                                                                                       lines, said):
    """`submit ... | head`: the job is the cluster's; submit stops following it (exit 141, as
    SIGPIPE ends a command) and says so on stderr, naming the job, not that it lost the
    job's output: after the reader's first line (`head -1`), or before any (`| true`)."""
    results = tmp_path / "results"
    returncode, read, err = lrsweep_read_until(
        (lambda line: True) if lines else None,  # as head -1 does, or true
        "submit", "sweeps/ionosphere.py", "--address", dashboard, "--data-dir", TEST_DATA, "--num-samples", "2",
        "--max-epochs", "5", "--confirm-seeds", "0", "--results", str(results), *flags)
    assert returncode == 141, err[-2000:]
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert last.startswith(f"lrsweep: {said} raysubmit_"), err[-2000:]
    job = last.split()[len(said.split()) + 1].rstrip(",")
    assert len(read) == lines and all(line.startswith(f"submitted {job} to ") for line in read), read
    # the commands it gives reach the job as typed in another shell (no RAY_ADDRESS, no
    # RAY_AUTH_MODE; the dashboard is not on 8265): they named no address, and Ray's `ray job
    # stop` failed for want of RAY_AUTH_MODE=token
    said = last.split("as the reader of its output stopped reading; the job goes on: ")[1]
    follow, status, stop = said.removesuffix(" stops it").split("; ")
    shell = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"], "RAY_ADDRESS": None,
             "RAY_API_SERVER_ADDRESS": None, "RAY_AUTH_MODE": None}
    assert (follow, status) == (f"lrsweep logs {job} --follow --address {dashboard}",
                                f"lrsweep status {job} --address {dashboard}"), said
    assert stop.endswith(f"ray job stop {job} --address {dashboard}"), said
    if flags:  # stopped with the command given, as a user stops a job that goes wrong
        stopped = subprocess.run(stop, shell=True, capture_output=True, text=True, timeout=120,
                                 env={k: v for k, v in {**os.environ, **shell}.items() if v is not None})
        assert stopped.returncode == 0, (stop, stopped.stderr[-2000:])
        wait_for(lambda: "STOPPED" in lrsweep(*shlex.split(status)[1:], env=shell, timeout=60).stdout, 90,
                 "the job did not stop")
        return
    followed = lrsweep(*shlex.split(follow)[1:], env=shell, timeout=300)
    assert followed.returncode == 0 and "2/2" in followed.stdout, followed.stderr[-2000:]
    assert len(pd.read_parquet(results / "trials")) == 2


def test_logs_follow_whose_reader_stops_reading_ends_while_the_job_writes_nothing(dashboard, tmp_path):
    """`logs --follow | head -1`: head had its line, but the pipeline waited for the command,
    which learnt that its reader was gone only as it wrote its next line: a job training a
    long trial writes one as the trial ends. It ends now, exit 141, and the job goes on."""
    from ray.job_submission import JobStatus

    from lrsweep.run.jobs import jobs_client

    done = lrsweep("submit", "sweeps/ionosphere.py", "--address", dashboard, "--data-dir", TEST_DATA, "--no-wait",
                   "--num-samples", "1", "--max-epochs", "50000", "--confirm-seeds", "0", "--results",
                   str(tmp_path / "results"), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    job, client = done.stdout.split()[1], jobs_client(dashboard)
    try:
        wait_for(lambda: "Ray dashboard" in client.get_job_logs(job), 120, "the job did not join the cluster")
        returncode, read, stderr = lrsweep_read_until(lambda line: True, "logs", job, "--follow", "--address",
                                                      dashboard, timeout=60)
        assert returncode == 141, stderr[-2000:]
        assert len(read) == 1 and "Traceback" not in stderr
        # it ended before the job wrote again: the one trial's line had not come
        assert client.get_job_status(job) == JobStatus.RUNNING and "1/1" not in client.get_job_logs(job)
    finally:
        client.stop_job(job)
        wait_for(lambda: client.get_job_status(job) in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED), 120,
                 "the job did not stop")


def test_the_folder_a_job_takes_along_leaves_out_only_its_results_and_checkpoints(tmp_path, monkeypatch):
    """submit and a Ray Client launch upload the current folder without its results folder
    and Tune's storage (where they lie in it), through Ray's own packing: a bare `results`
    among the excludes left out the package's `lrsweep/results/` too (Ray reads them as
    .gitignore lines), and the job's `python -m lrsweep` failed on the cluster (No module
    named 'lrsweep.results'); a storage folder's checkpoints went up with every job."""
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    from lrsweep.run.jobs import runtime_env

    for name in ("lrsweep/results/store.py", "lrsweep/cli.py", "sweeps/digits.py", "results/trials/part-1.parquet",
                 "sweeps/results/notes.txt", "state/run/checkpoint_000001/weights.h5"):
        (tmp_path / "here" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "here" / name).write_text("x")
    monkeypatch.chdir(tmp_path / "here")
    env = runtime_env("results", "state")  # and Tune's storage: its checkpoints went up with each job
    create_package(env["working_dir"], tmp_path / "package.zip", include_gitignore=True, excludes=env["excludes"])
    packed = {name for name in zipfile.ZipFile(tmp_path / "package.zip").namelist() if not name.endswith("/")}
    assert packed == {"lrsweep/results/store.py", "lrsweep/cli.py", "sweeps/digits.py", "sweeps/results/notes.txt"}


@pytest.mark.parametrize("args, named", [
    (["submit", "sweeps/ionosphere.py", "--num-samples", "0"], "num_samples=0"),
    (["submit", "sweeps/ionosphere.py", "--address", "127.0.0.1:6379"], "address='127.0.0.1:6379'"),
    (["status", "raysubmit_nosuchjob"], "JOB='raysubmit_nosuchjob'"),
    (["logs", "raysubmit_nosuchjob", "--follow"], "JOB='raysubmit_nosuchjob'"),
])
def test_job_commands_answer_bad_input_with_one_line(dashboard, args, named):
    done = lrsweep(*args, *([] if "--address" in args else ["--address", dashboard]), timeout=60)
    assert_refused(done, named)


def test_job_commands_refuse_a_job_the_jobs_api_did_not_start(head):
    """A driver run on the cluster by hand (`launch --address auto` on the head) is a Ray job
    too, listed by its hex id: Ray keeps no output of it (`logs` ended on a traceback) and
    calls it SUCCEEDED however it ended (`status` exited 0)."""
    driver = subprocess.run([sys.executable, "-c", "import ray; ray.init(address=%r, logging_level='ERROR'); "
                             "print(ray.get_runtime_context().get_job_id())" % head["gcs"]],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_AUTH_MODE": "token"})
    job = driver.stdout.split()[-1]
    for command in (["status", job], ["logs", job], ["logs", job, "--follow"]):
        assert_refused(lrsweep(*command, "--address", head["dashboard"], timeout=60), f"JOB={job!r}",
                       "a driver run on the cluster another way")


def test_job_commands_name_an_address_where_no_dashboard_answers(head):
    """Nothing listens there, or a port of Ray's that answers no HTTP (the GCS's, where
    `submit` ended on a traceback of Python's HTTP client)."""
    for address in (f"http://127.0.0.1:{free_port()}", f"http://{head['gcs']}"):
        for command in (["status", "raysubmit_x"], ["submit", "sweeps/ionosphere.py", "--data-dir", TEST_DATA]):
            assert_refused(lrsweep(*command, "--address", address, timeout=60), f"address={address!r}")


def test_job_commands_name_the_token_where_the_dashboard_refuses_it(dashboard):
    """A machine without the cluster's token (or with another cluster's): one line, not
    Ray's AuthenticationError traceback."""
    done = lrsweep("status", "raysubmit_x", "--address", dashboard, env={"RAY_AUTH_TOKEN": "not-the-token"},
                   timeout=60)
    assert_refused(done, "refused this machine's token", "RAY_AUTH_TOKEN", repr(dashboard))


def test_job_commands_use_the_address_given_over_rays_environment(dashboard):
    """Ray's Jobs client takes RAY_API_SERVER_ADDRESS or RAY_ADDRESS over the address it is
    given: `--address` must win, then RAY_API_SERVER_ADDRESS (as `ray start` suggests it).
    A job that no dashboard knows proves which one answered."""
    elsewhere = f"http://127.0.0.1:{free_port()}"
    done = lrsweep("status", "raysubmit_nosuchjob", "--address", dashboard, timeout=60,
                   env={"RAY_ADDRESS": elsewhere, "RAY_API_SERVER_ADDRESS": elsewhere})
    assert_refused(done, "JOB='raysubmit_nosuchjob'", dashboard)
    done = lrsweep("status", "raysubmit_nosuchjob", timeout=60, env={"RAY_API_SERVER_ADDRESS": dashboard,
                                                                      "RAY_ADDRESS": elsewhere})
    assert_refused(done, "JOB='raysubmit_nosuchjob'", dashboard)


def test_submit_of_a_job_that_fails_on_the_cluster_exits_1_and_says_why(dashboard, tmp_path):
    """A sweep file that loads here but not in the job (it refuses the job's uploaded copy
    of its folder): `submit` follows the job to its end, shows the launch's own line, and
    ends with the job's state on stderr and exit status 1."""
    (tmp_path / "mine.py").write_text(
        "import os\nfrom lrsweep import Sweep\n"
        "if 'working_dir_files' in os.getcwd():\n    raise ValueError('not in a job')\n"
        "SWEEP = Sweep(name='mine', configs=[{'family': 'constant', 'initial_lr': 0.1}], max_epochs=1)\n")
    done = subprocess.run([sys.executable, "-m", "lrsweep", "submit", "mine.py", "--address", dashboard],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "not in a job" in done.stdout  # the launch's one line, as the job printed it
    job = done.stdout.split()[1]
    # the job's state in one line: Ray's message for a failed job goes on with its last logs, printed just above
    assert done.stderr == f"lrsweep: {job}: FAILED (Job entrypoint command failed with exit code 2)\n", done.stderr
    status = lrsweep("status", job, "--address", dashboard, timeout=60)
    assert (status.returncode, status.stdout) == (1, done.stderr.removeprefix("lrsweep: ")), status.stderr
    shown = lrsweep("logs", job, "--address", dashboard, timeout=60)  # its output, then the same line and status
    assert (shown.returncode, shown.stderr) == (1, done.stderr) and "not in a job" in shown.stdout


def test_a_launch_through_ray_client_runs_on_the_head_and_takes_ctrl_c_as_one_here(head, tmp_path):
    """`launch --address ray://...` prints the launch's output as it comes; Ctrl-C stops
    the launch on the head as it stops one here (what ended stored and ranked, exit 130)
    and the resume command it prints, the one typed here, finishes the run there."""
    results = tmp_path / "results"
    typed = ["launch", "sweeps/ionosphere.py", "--address", head["client"], "--data-dir", TEST_DATA,
             "--num-samples", "20", "--max-epochs", "30", "--confirm-seeds", "0", "--results", str(results)]
    launch = subprocess.Popen([sys.executable, "-m", "lrsweep", *typed], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        for line in launch.stdout:  # until the first trial has ended on the head
            lines.append(line)
            if " 1/20 " in line:
                launch.send_signal(signal.SIGINT)
                break
        out, err = launch.communicate(timeout=180)
    finally:
        if launch.poll() is None:
            launch.kill()
    out = "".join(lines) + out
    assert launch.returncode == 130, err[-2000:]
    assert "through Ray Client" in out and "(on the head node)" in out
    assert "lrsweep rank --dataset ionosphere" in out  # what ended, ranked on the head
    hint = out.strip().splitlines()[-1]
    assert hint.startswith("interrupted before every trial ran; this finishes it: lrsweep launch "), out[-2000:]
    again = shlex.split(hint.split("this finishes it: lrsweep ", 1)[1])
    assert again[:len(typed)] == typed and again[-1] == "--resume"
    stopped = pd.read_parquet(results / "trials")
    assert 1 <= len(stopped) < 20  # the trial that ended is stored; the run is not over
    ended, saved = tune_finished(results / "tune" / again[again.index("--name") + 1])
    assert saved and set(stopped["trial_id"]) == ended  # what the resume skips is what is stored
    finished = lrsweep(*again, env={"RAY_USAGE_STATS_ENABLED": "0"}, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    trials = pd.read_parquet(results / "trials")
    assert len(trials) == 20 and trials["trial_id"].is_unique and trials["sweep"].nunique() == 1
    assert set(stopped["trial_id"]) <= set(trials["trial_id"])  # what the stopped launch stored stays
    assert set(trials["node"]) == _node_ids(head["gcs"])  # the cluster's one node, the head


def test_a_launch_that_cannot_join_the_cluster_it_names_says_why_in_one_line(head, tmp_path):
    """An address that reaches no cluster, or one that refuses this machine's token, is
    refused in one line and in seconds, exit 2, nothing stored. ray.init waited minutes on a
    host:port where nothing listens, and for good on the dashboard's port; on the GCS with
    another token, or on Ray Client's port, it logged a line a second for 20 s and then
    named an address that was not given. Through Ray Client: a port where nothing listens
    (after 10 s, as a server that is starting may), the GCS's port (a port of Ray's, but
    not Ray Client's), the dashboard's, another token: Ray Client tried for 30 s and said
    only that it timed out."""
    results, wrong = tmp_path / "results", {"RAY_AUTH_TOKEN": "0" * 32}
    client, dashboard = head["client"].removeprefix("ray://"), head["dashboard"].removeprefix("http://")
    for address, env, said in [
            (f"127.0.0.1:{free_port()}", {}, "reaches no Ray cluster: nothing answers at 127.0.0.1:"),
            (head["gcs"], wrong, "reaches a Ray cluster that refuses the token in RAY_AUTH_TOKEN: put in "
             "RAY_AUTH_TOKEN the token its head was started with"),
            (head["gcs"], {"RAY_AUTH_MODE": "disabled"}, "reaches a Ray cluster that refuses a client whose "
             "RAY_AUTH_MODE (disabled) sends no token: set RAY_AUTH_MODE=token"),
            (client, {}, "reaches no Ray cluster: " + client + " answers as another gRPC server (Ray Client's"),
            (dashboard, {}, "reaches no Ray cluster: " + dashboard + " answers as an HTTP server (the dashboard's"),
            # no RAY_AUTH_MODE: lrsweep turns token mode on, as the token exists, unannounced
            (f"ray://127.0.0.1:{free_port()}", {"RAY_AUTH_MODE": None},
             "reaches no Ray cluster: nothing answers at ray://127.0.0.1:"),
            (f"ray://{head['gcs']}", {"RAY_AUTH_MODE": None}, "reaches no Ray Client: ray://" + head["gcs"] +
             " answers as another gRPC server"),
            (f"ray://{dashboard}", {"RAY_AUTH_MODE": None}, "reaches no Ray Client: ray://" + dashboard +
             " answers as an HTTP server"),
            (head["client"], {"RAY_AUTH_MODE": None, **wrong}, "reaches a Ray cluster that refuses the token in "
             "RAY_AUTH_TOKEN")]:
        done = lrsweep("launch", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--results", str(results),
                       "--address", address, env=env, timeout=180)
        assert done.returncode == 2, done.stderr[-2000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"lrsweep: error: Argument `address` {said}"), last
        assert done.stderr.strip() == last and f"address={address!r}" in last
    assert not results.exists()  # nor the run's folder


def test_a_launch_through_ray_client_whose_output_reader_stops_reading_stops_on_the_head(head, tmp_path):
    """`launch --address ray://... | head`: as a launch here, the launch on the head stops as
    on Ctrl-C, and this command exits 141 with the way to finish the run on stderr."""
    results = tmp_path / "results"
    returncode, _, err = lrsweep_read_until(
        lambda line: " 1/40 " in line,  # the first trial has ended on the head
        "launch", "sweeps/ionosphere.py", "--address", head["client"], "--data-dir", TEST_DATA, "--num-samples",
        "40", "--max-epochs", "30", "--confirm-seeds", "0", "--results", str(results), "--name", "piped")
    assert returncode == 141, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("lrsweep: the launch stopped, as the reader of its output stopped reading; what ended "
                           "is stored; this finishes it: lrsweep launch "), err[-2000:]
    assert "--resume" in last and "--name piped" in last
    stopped = pd.read_parquet(results / "trials")
    assert 1 <= len(stopped) < 40  # stopped on the head, not run to its end
    ended, saved = tune_finished(results / "tune" / "piped")
    assert saved and set(stopped["trial_id"]) == ended  # what the resume skips is what is stored


def test_a_quick_try_through_ray_client_warns_once(head, tmp_path):
    """The warning of a `--max-epochs` too short for some of the sweep's values (ionosphere.py's
    5-epoch cosine warm-ups) is printed by the checks here, and not again by the launch on the
    head node, whose output this command prints."""
    done = lrsweep("launch", "sweeps/ionosphere.py", "--address", head["client"], "--data-dir", TEST_DATA,
                   "--num-samples", "1", "--max-epochs", "2", "--confirm-seeds", "0", "--results",
                   str(tmp_path / "results"), env={"RAY_USAGE_STATS_ENABLED": "0"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    warning = "lrsweep: warning: max_epochs=2: families['cosine'] draws `warmup_epochs` from {0} instead of {0, 5}"
    assert done.stderr.count(warning) == 1, done.stderr[-2000:]
    assert "lrsweep rank --dataset ionosphere" in done.stdout  # it ran on the head, to its end
    assert len(pd.read_parquet(tmp_path / "results" / "trials")) == 1


def test_a_launch_through_ray_client_whose_client_is_killed_stops_on_the_head_as_on_ctrl_c(head, tmp_path):
    """A client killed with SIGKILL (its connection lost, as when a laptop sleeps): once
    Ray Client gives up on it (here after 3 s, Ray's default 30), the launch on the head
    stops as on Ctrl-C, not killed with its actor: Tune saves its state with every trial
    stored as ended, and the run, named in the first line, is resumed through ray://."""
    results = tmp_path / "results"
    client = subprocess.Popen([sys.executable, "-m", "lrsweep", "launch", "sweeps/ionosphere.py", "--address",
                               head["client"], "--data-dir", TEST_DATA, "--num-samples", "100", "--max-epochs", "30",
                               "--confirm-seeds", "0", "--results", str(results)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True,
                              env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_CLIENT_RECONNECT_GRACE_PERIOD": "3"})
    try:
        name = shlex.split(client.stdout.readline())[-1]  # the launch command, with the run's --name
        while " 1/100 " not in client.stdout.readline():
            assert client.poll() is None
    finally:
        client.kill()
        client.wait()
    launch = f"lrsweep launch sweeps/ionosphere.py --results {results}"  # as the actor on the head runs it
    pid = int(subprocess.run(["pgrep", "-f", launch], capture_output=True, text=True).stdout)
    actor = processes()[pid][0]  # its parent: the actor's worker
    alive = time.time()

    def actor_ended():
        nonlocal alive
        now = time.time()
        if os.path.exists(f"/proc/{actor}"):
            alive = now
        return alive != now

    wait_for(actor_ended, 120, "Ray Client kept the session of a killed client", every=0.05)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 120, "the launch on the head did not stop")
    saves = list((results / "tune" / name).glob("experiment_state-*.json"))
    assert max(save.stat().st_mtime for save in saves) > alive  # Tune saved its state after the actor ended
    stored = pd.read_parquet(results / "trials")
    finished, saved = tune_finished(results / "tune" / name)
    assert saved and 1 <= len(stored) < 100  # stopped before its end (13 of 200 here)
    assert set(stored["trial_id"]) == finished  # every trial stored as Tune's last save holds it
    again = lrsweep("launch", "sweeps/ionosphere.py", "--address", head["client"], "--data-dir", TEST_DATA,
                    "--results", str(results), "--name", name, "--resume", env={"RAY_USAGE_STATS_ENABLED": "0"},
                    timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = pd.read_parquet(results / "trials")
    assert len(trials) == 100 and trials["trial_id"].is_unique


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory):
    """A cluster of two one-CPU nodes on two machines (here a second node on another address
    of this machine, 127.0.0.2): its GCS address."""
    port = free_port()
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, **RAY_START_ENV, "RAY_AUTH_MODE": "token"}  # a node joins with the token
    nodes = []
    try:
        for node in (["--head", f"--port={port}", "--include-dashboard=false"],
                     [f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.2"]):
            nodes.append(subprocess.Popen([os.path.join(bin_dir, "ray"), "start", "--block", "--num-cpus=1",
                                           "--disable-usage-stats", *node], cwd=tmp_path_factory.mktemp("nodes"),
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
            if len(nodes) == 1:
                wait_for(lambda: _answers(port), 90, "the head did not come up")
        wait_for(lambda: len(_node_ids(f"127.0.0.1:{port}")) == 2, 90, "the second node did not join")
        yield f"127.0.0.1:{port}"
    finally:
        for node in reversed(nodes):
            stop_ray_start(node)


def test_a_launch_whose_tune_storage_other_machines_cannot_reach_warns_at_once(two_machines, tmp_path):
    """Tune's storage a folder of the launch's machine, on a cluster of nodes on several
    machines: trials on the others save no checkpoint (Ray would fail them at their first),
    so a retry or a resume starts them over, unless the folder is one they share. The
    launch says so as it starts."""
    returncode, _, stderr = lrsweep_read_until(
        lambda line: line.startswith("["),  # the trial has ended
        "launch", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--num-samples", "1", "--max-epochs", "2",
        "--confirm-seeds", "0", "--results", str(tmp_path / "results"), "--address", two_machines)
    warning = next((line for line in stderr.splitlines() if "storage" in line), stderr[-2000:])
    assert warning.startswith(f"lrsweep: warning: Tune's storage {tmp_path / 'results' / 'tune'} is a folder of "
                              f"this machine"), warning
    assert "127.0.0.2" in warning and "s3://" in warning


def test_trials_larger_than_every_node_of_a_cluster_warn_that_they_wait_though_the_cluster_has_enough(
        two_machines, tmp_path):
    """Ray places each trial on one node: trials of 2 CPUs on two nodes of one CPU never start,
    though the cluster has 2 CPUs in all. The launch says so at once (a warning: an autoscaler
    may add a larger node), and Ctrl-C stops it."""
    line, returncode = waiting_launch_warning(tmp_path, two_machines, {"cpu": 2}, "CPUs each")
    assert line == ("lrsweep: warning: the trials ask for 2 CPUs each, and no node of the cluster joined has that "
                    "many now (the largest has 1, 2 in all; a trial runs on one node): they wait for nodes its "
                    "autoscaler adds (forever, where it adds none)"), line
    assert returncode == 130


def _answers(port):
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _node_ids(gcs):
    code = ("import sys, ray\nfrom lrsweep.run.driver import use_token_if_present\nuse_token_if_present()\n"
            "ray.init(address=sys.argv[1], logging_level='ERROR')\nprint(*(n['NodeID'] for n in ray.nodes()))")
    done = subprocess.run([sys.executable, "-c", code, gcs], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.split())
