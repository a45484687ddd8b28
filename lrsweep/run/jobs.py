"""Sweeps as Ray jobs on a long-running cluster: `submit`, `status` and `logs`, through
Ray's Jobs API (the dashboard's HTTP address), as `ray job submit` would run them.

A submitted job uploads the current folder as its working directory (Ray's `working_dir`,
without `.git`, virtual environments and the results folder) and runs `python -m lrsweep
launch` there on the cluster, which the job joins; the job shows in the dashboard's Jobs
view. The launch runs on the cluster's head node: it reads the data and writes the results
and Tune's state there, at the paths this folder gives them (relative ones are made
absolute here), so a cluster on this machine reads and writes where `launch` would.
"""

import asyncio
import json
import logging
import os
import re
import shlex
import sys
import time
import urllib.parse

from lrsweep.errors import LrsweepError
from lrsweep.results.store import is_uri

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Not uploaded with the working directory: what a project folder holds beside its code.
EXCLUDES = [".git", ".venv", "venv", "__pycache__", ".pytest_cache"]
# How often `logs --follow` reads a job's output where Ray's stream of it ended early.
FOLLOW_SECONDS = 1.0
FOLLOW_RETRIES = 30
# How often a followed job's output checks that its reader still reads (`| head`).
READER_SECONDS = 0.5
# How long `submit` waits for a cluster that has just started to take jobs.
AGENT_WAIT_SECONDS = 60
# The job's outcomes, as `logs --follow` and `status` answer them in their exit status.
EXIT_STATUS = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 1}


def not_this_machine(host):
    """Why `host` is not an address of this machine (one a server here can listen on), or
    None if it is."""
    import socket

    found, error = [], "no address"
    try:
        found = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        error = getattr(e, "strerror", None) or str(e)
    for family, kind, proto, _, address in found:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.bind(address)
            return None
        except OSError as e:
            error = e.strerror
    return error


def on_this_machine(address):
    """Whether the cluster at `address` (http://HOST:PORT, ray://HOST:PORT) has its head
    node on this machine, where its launch reads and writes the paths given here. An address
    of this machine may be a port forwarded to a remote head (`ray dashboard cluster.yaml`,
    `ssh -L`): a dashboard's head is here where its Ray session's folder is; a Ray Client
    server's, where that server runs here. In doubt, not here: the launch on the head checks
    its paths there. No Ray import (bad input is answered before Ray loads)."""
    parts = urllib.parse.urlsplit(address)
    if not_this_machine(parts.hostname or ""):
        return False
    if parts.scheme not in ("http", "https"):
        return _client_server_runs_here(parts.port)
    session = _dashboard_session(address)
    return bool(session) and os.path.isdir(os.path.join(_ray_temp_dir(), session))


def _command_lines():
    """The arguments (bytes) of each process of this machine that /proc shows."""
    import glob

    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as f:
                yield f.read().split(b"\0")
        except OSError:  # ended meanwhile, or another user's
            continue


def _client_server_runs_here(port):
    """Whether a Ray Client server listening on `port` runs on this machine (its command
    line, as Ray starts it: `-m ray.util.client.server ... --port=PORT`); False where /proc
    cannot tell."""
    wanted = f"--port={port}".encode()
    return any(b"ray.util.client.server" in arguments and wanted in arguments for arguments in _command_lines())


def _dashboard_session(address):
    """The name of the Ray session whose dashboard answers at `address`, or None."""
    import http.client
    import urllib.request

    request = urllib.request.Request(f"{address.rstrip('/')}/api/version")
    token = auth_token()[1]
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read()).get("session_name")
    # no dashboard there, another token, not Ray's answer, or no HTTP answer (the GCS's port)
    except (OSError, ValueError, AttributeError, http.client.HTTPException):
        return None


def auth_token():
    """(Where this machine's Ray token is, the token or None), where Ray looks for it:
    RAY_AUTH_TOKEN, else the file that RAY_AUTH_TOKEN_PATH names, else ~/.ray/auth_token."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return "RAY_AUTH_TOKEN", token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")  # as given: Ray expands no ~ in it
    where = path or "~/.ray/auth_token"
    try:
        with open(path or os.path.expanduser(where)) as f:
            return where, f.read().strip() or None
    except OSError:
        return where, None


def _ray_temp_dir():
    """Where a Ray started here keeps its sessions' folders, as Ray chooses it."""
    system = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return os.path.join(system or "/tmp", "ray")


def jobs_address(address):
    """`--address`, else RAY_API_SERVER_ADDRESS (as `ray start` suggests exporting it), else
    RAY_ADDRESS where it is an HTTP address (as Ray's own `ray job` commands read it), else
    the dashboard of the Ray `ray start` last started on this machine
    (`_dashboard_started_here`), else DEFAULT_ADDRESS."""
    from_env = os.environ.get("RAY_ADDRESS", "")
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or (
        from_env if from_env.startswith(("http://", "https://")) else _dashboard_started_here() or DEFAULT_ADDRESS)
    if not address.startswith(("http://", "https://")):
        raise LrsweepError(f"Argument `address` must be the dashboard's HTTP address, e.g. {DEFAULT_ADDRESS}. "
                           f"Received: address={address!r}")
    return address


def _dashboard_started_here():
    """The dashboard's address of the Ray that `ray start` last started on this machine (the
    file it writes, `ray stop` removes) and that still runs, as its raylet was told it
    (`--webui=HOST:PORT` in its command line: another port than 8265 where another Ray held
    that one), else None (none runs, or it has no dashboard). No Ray import, no connection:
    said at once, before bad input is answered. (Ray's own `ray job` asks the GCS, which
    waits 40 s for a Ray without a dashboard.)"""
    try:
        with open(os.path.join(_ray_temp_dir(), "ray_current_cluster")) as f:
            gcs = f.read().strip()
    except OSError:
        return None
    wanted = f"--gcs-address={gcs}"
    for arguments in _command_lines():
        if not arguments[0].endswith(b"/raylet"):
            continue
        line = b" ".join(arguments).decode(errors="replace")
        if wanted in line.split():
            found = re.search(r"--webui=([^\s\"']+)", line)
            return f"http://{found.group(1)}" if found else None
    return None


def reach_again(job, address):
    """The commands that reach job `job` at `address` again from a shell (which may have no
    RAY_ADDRESS, or another one): its output, its state, and Ray's command that stops it
    (`ray job` sends no token unless told: RAY_AUTH_MODE=token, where this command sent one)."""
    at = f"--address {shlex.quote(address)}"
    token = "RAY_AUTH_MODE=token " if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else ""
    return f"lrsweep logs {job} --follow {at}", f"lrsweep status {job} {at}", f"{token}ray job stop {job} {at}"


def jobs_client(address):
    from ray.job_submission import JobSubmissionClient

    from lrsweep.run.driver import use_token_if_present

    # Ray's notes on the upload, the token and the log stream are not this command's output.
    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.ERROR)
    use_token_if_present()
    # Ray's client takes RAY_API_SERVER_ADDRESS or RAY_ADDRESS over the address it is given
    # (`get_address_for_submission_client`): the address chosen above is the one to use.
    hidden = {name: os.environ.pop(name) for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS") if name in os.environ}
    from ray.exceptions import AuthenticationError

    try:
        return JobSubmissionClient(address)
    except ConnectionError as e:
        raise LrsweepError(f"Argument `address` reaches no Ray dashboard ({str(e).splitlines()[0]}). "
                           f"Received: address={address!r}") from None
    except AuthenticationError as e:  # Ray's own message is a page of advice
        raise LrsweepError(f"Argument `address` is a Ray dashboard that refused this machine's token ("
                           f"{str(e).splitlines()[0].rstrip('.')}): the cluster's own token goes in ~/.ray/auth_token "
                           f"or RAY_AUTH_TOKEN (`ray get-auth-token` on the head prints it). Received: "
                           f"address={address!r}") from None
    finally:
        os.environ.update(hidden)


def launch_command(sweep_path, sweep, args):
    """The `launch` command line the job runs in its working directory (the current folder)."""
    relative = os.path.relpath(os.path.abspath(sweep_path))
    if relative.startswith(os.pardir):
        raise LrsweepError(f"Argument `SWEEP.py` must lie in the current folder, which is uploaded to the cluster "
                           f"as the launch's working directory. Received: SWEEP.py={sweep_path!r}")
    results = sweep.results if is_uri(sweep.results) else os.path.abspath(sweep.results)
    command = ["python", "-m", "lrsweep", "launch", relative, "--results", results]
    # The data and Tune's state as this folder names them, not as the job's copy of it would
    settings = sweep.training_settings()
    for flag in ("dataset", "data_dir", "storage", "num_samples", "max_epochs", "confirm_seeds", "seed", "name"):
        if flag == "dataset" and args.resume and args.dataset is None:
            continue  # the run's own, which the launch takes (a path here would read as the user's --dataset)
        path = flag in ("dataset", "data_dir", "storage") and settings[flag] != getattr(sweep, flag)
        value = settings[flag] if path else getattr(args, flag)
        if value is not None:
            command += [f"--{flag.replace('_', '-')}", str(value)]
    if args.resume:
        command.append("--resume")
    return command, results


def runtime_env(results, storage=None):
    """The current folder as the launch's working directory on the cluster, without what
    `EXCLUDES` names, the results folder and Tune's storage (checkpoints) where they lie in
    it; the trainers' idle time is the launching shell's setting, here this one's. Ray reads
    excludes as .gitignore lines: a folder's is anchored to the top (a bare `results` also
    left out the package's own `lrsweep/results/`, and the job ran without it)."""
    inside = [os.path.relpath(folder) for folder in (results, storage) if folder and not is_uri(folder)]
    excludes = EXCLUDES + [f"/{relative}" for relative in inside if relative != os.curdir
                           and not relative.startswith(os.pardir)]
    env = {name: os.environ[name] for name in ("LRSWEEP_TRAINER_IDLE_SECONDS",) if name in os.environ}
    return {"working_dir": os.getcwd(), "excludes": excludes, **({"env_vars": env} if env else {})}


# How long `ray job stop` lets the launch end as on Ctrl-C (Tune's state saved, what ended
# stored and ranked) before it kills it: Ray's supervisor waits 3 s by default.
STOP_WAIT_SECONDS = 60


def submit(command, results, client, storage=None, typed=None):
    """Submit the launch as a Ray job through `client` (`jobs_client`); returns its id.
    `typed`: the `submit` command line the user typed, which a stopped job's output gives
    back, made to resume the run."""
    from lrsweep.run.client import TYPED

    env = runtime_env(results, storage)
    env["env_vars"] = {**env.get("env_vars", {}), "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_SECONDS),
                       **({TYPED: json.dumps(typed)} if typed else {})}
    deadline = time.time() + AGENT_WAIT_SECONDS
    while True:
        try:
            return client.submit_job(entrypoint=shlex.join(command), runtime_env=env, metadata={"lrsweep": "launch"})
        except RuntimeError as e:  # a cluster just started answers before its job agent is up
            if "No available agent" not in str(e) or time.time() > deadline:
                raise
            time.sleep(1)


def job_info(client, job, address):
    """The job's details; LrsweepError for one Ray's Jobs API did not start (a driver run
    on the cluster by hand, whose Ray job id the dashboard lists too), which has no output
    to give and whose state is SUCCEEDED however it ended."""
    try:
        info = client.get_job_info(job)
    except RuntimeError as e:
        if "does not exist" in str(e) or "404" in str(e):
            raise LrsweepError(f"Argument `JOB` names no job at {address}. Received: JOB={job!r}") from None
        raise
    if not info.submission_id:
        raise LrsweepError(f"Argument `JOB` must name a job that `lrsweep submit` (Ray's Jobs API) started; {job} is "
                           f"a driver run on the cluster another way, whose output and outcome Ray does not keep. "
                           f"Received: JOB={job!r}")
    return info


def _state(client, job, address):
    """(the job's state, one line on it, exit status: 0 running or succeeded, 1 failed or stopped)."""
    info = job_info(client, job, address)
    state = str(info.status.value if hasattr(info.status, "value") else info.status)
    # a failed job's message is its entrypoint's exit code, then its last log lines (which
    # `logs` and a followed `submit` have just printed): up to those; where the job never
    # started (its runtime environment failed to install), its first line and its last,
    # which says why
    lines = [line.strip() for line in (info.message or "").split(", last available logs")[0].split("\n")
             if line.strip()]
    message = " ... ".join(lines[:1] + lines[1:][-1:]).rstrip(":")
    line = f"{job}: {state}" + (f" ({message})" if message else "")
    return state, line, EXIT_STATUS.get(state, 0)


def reader_gone(stream=None):
    """Whether the reader of `stream` (sys.stdout), a pipe, has closed its end (`| head` that
    has its lines): Linux reports POLLERR on the writing end then. A write would find out,
    but a followed job may write nothing for minutes, and the pipeline waits for it."""
    import select

    try:
        fd = (stream or sys.stdout).fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test's capture)
        return False
    poller = select.poll()
    poller.register(fd, 0)  # errors only
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _read_on(client, job, address, write, written):
    """The job's output after its first `written` characters, read from its whole output
    every `FOLLOW_SECONDS` until the job has ended; a dashboard that does not answer (it is
    restarting) is asked again, `FOLLOW_RETRIES` times in a row at most. Returns the ended
    job's `_state`."""
    state, failures = None, 0
    while state is None or state[0] not in EXIT_STATUS:
        try:
            now = _state(client, job, address)
            text = client.get_job_logs(job)  # after the state: all the output of a job it says ended
        except (RuntimeError, OSError):
            failures += 1
            if failures > FOLLOW_RETRIES:
                raise
            time.sleep(FOLLOW_SECONDS)
            continue
        failures, state = 0, now  # (an ended state counts once the output after it is read)
        write(text[written:])
        sys.stdout.flush()
        written = max(written, len(text))
        if state[0] not in EXIT_STATUS:
            time.sleep(FOLLOW_SECONDS)
            if reader_gone():
                raise BrokenPipeError
    return state


def status(job, address):
    return _state(jobs_client(address), job, address)[1:]


def logs(job, address, follow, write=sys.stdout.write, client=None):
    """Write the job's output so far, or follow it until the job ends; returns the exit
    status of `status`, and says on stderr how a job that ended failed.
    Ray's stream of the output can end before the job does (its dashboard's job module
    restarting: ray-project/ray#51601): the rest is then read from the job's whole output,
    every `FOLLOW_SECONDS`, until the job has ended."""
    client = client or jobs_client(address)
    if not follow:  # the state first (an unknown job: bad input before any output), then the
        # output, which holds all of a job the state says ended
        _, line, status = _state(client, job, address)
        write(client.get_job_logs(job))
        if status:
            print(f"lrsweep: {line}", file=sys.stderr)
        return status
    job_info(client, job, address)
    written = 0

    async def tail():
        nonlocal written
        async for chunk in client.tail_job_logs(job):
            write(chunk)
            sys.stdout.flush()
            written += len(chunk)

    async def reading():
        while not reader_gone():
            await asyncio.sleep(READER_SECONDS)

    async def follow():  # until the stream ends, or the reader goes (between two chunks, minutes apart)
        stream, reader = asyncio.ensure_future(tail()), asyncio.ensure_future(reading())
        done, _ = await asyncio.wait({stream, reader}, return_when=asyncio.FIRST_COMPLETED)
        stream.cancel()
        reader.cancel()
        if stream not in done:
            raise BrokenPipeError
        stream.result()

    from aiohttp import ClientError

    try:
        asyncio.run(follow())
        state = _state(client, job, address)
    except BrokenPipeError:  # this command's reader gone, not the stream
        raise
    except (RuntimeError, OSError, ClientError):  # the stream closed abnormally, or could not open (the
        # dashboard restarting, answering 502 to the websocket; a forwarded port dropped): read on below
        state = None
    if state is None or state[0] not in EXIT_STATUS:  # (it asks again while the dashboard restarts)
        state = _read_on(client, job, address, write, written)
    _, line, status = state
    if status:
        print(f"lrsweep: {line}", file=sys.stderr)
    return status
