"""The driver: start or join Ray, run the sweep with Tune, record it, rank it.

A plain `Tuner(trainable, tune_config=TuneConfig(...), run_config=RunConfig(...))`:
`OptunaSearch` over the sweep's conditional space (or the fixed `configs`), `ASHAScheduler`
for early stopping, the dataset loaded once here and shared with every trial through the
object store (`tune.with_parameters`), and a `Recorder` callback that writes every report.
CPU trials train on warm trainers that outlive the launch (`pool`). The driver never
imports TensorFlow.
"""

import atexit
import contextlib
import json
import logging
import math
import os
import re
import shlex
import signal
import sys
import threading
import time

from lrsweep.errors import LrsweepError, warn
from lrsweep.results import store
from lrsweep.run import resume as run_files
from lrsweep.sweep.spec import check_name

# Ray Tune's own per-trial JSON/CSV/TensorBoard logs duplicate the store at a cost per
# report; the driver's Recorder is the record.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Tune's new output engine prints its configuration box and "View detailed results here"
# even at verbose=0 (Ray 2.60); the legacy one, at verbose=0, prints nothing: the launch's
# output is the Recorder's progress and the ranking.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_name(sweep, name=None):
    return name or f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def storage_path(sweep):
    """Where Tune keeps its experiment state (for `--resume`): the sweep's `storage`, or a
    folder beside the tables in the results folder."""
    storage = sweep.storage or f"{sweep.results.rstrip('/')}/tune"
    return storage if store.is_uri(storage) else os.path.abspath(storage)


def check_results(sweep, storage=True):
    """The sweep's results folder, and its `storage` if it names one (and `storage`), can be
    written (or made); else bad input, before Ray."""
    for name in ("results", "storage") if storage else ("results",):
        folder = getattr(sweep, name)
        reason = folder and store.check_writable(folder)
        if reason:
            raise LrsweepError(f"Argument `{name}` must be a writable folder. Received: {name}={folder!r} ({reason})")


def check_launch(sweep, name, resume, here=True):
    """Bad input that only launching can find, answered before Ray starts. `here`: the run's
    storage is on this machine (`submit`'s, and a launch's through Ray Client, is on the
    cluster's head node: checked there, unless that is this machine)."""
    from lrsweep.run.pool import idle_seconds

    idle_seconds()
    if name is not None:
        check_name("name", name)
        if re.search(r"-(confirm|rung[0-9]+)$", name):
            raise LrsweepError(f"Argument `name` must not end in -confirm or -rung<k>: Tune keeps the later stages "
                               f"of a run under those names. Received: name={name!r}")
    if resume and name is None:
        raise LrsweepError("Argument `resume` needs --name, the sweep to continue. Received: name=None")
    if not here:  # the store and Tune's state are on the cluster's head node, where the launch checks them
        return
    check_results(sweep)
    if name is not None and not resume and (store.sweep_exists(sweep.results, name) or any(
            tune_state_exists(f"{storage_path(sweep)}/{experiment}") for experiment in _stage_experiments(sweep, name))):
        raise LrsweepError(f"Argument `name` names a sweep the store or Tune's storage already holds. Received: "
                           f"name={name!r} (pass --resume to continue it, or choose another name)")
    if resume:
        path = f"{storage_path(sweep)}/{name}"
        if not tune_state_exists(path):
            raise LrsweepError(f"Argument `name` names no sweep that can be resumed. Received: name={name!r} "
                               f"(no Tune state in {path})")
        for experiment in _stage_experiments(sweep, name):  # each stage is restored on its own
            damaged = _damaged_tune_state(f"{storage_path(sweep)}/{experiment}")
            if damaged:
                raise LrsweepError(f"Argument `name` names a sweep whose saved Tune state cannot be read, so it "
                                   f"cannot be resumed. Received: name={name!r} ({damaged}, as a launch killed "
                                   f"while Tune copies its state leaves it; the trials stored stay in the results: "
                                   f"launch again under another name)")


def tune_state_exists(path):
    """Ray's `Tuner.can_restore(path)` without importing Ray (`validate --resume` starts
    neither Ray nor TensorFlow): the experiment folder holds Tune's `tuner.pkl`. The one
    test of a resumable experiment, for the check and for the restore itself."""
    import pyarrow.fs as pafs

    fs, base = store.filesystem(path)
    return fs.get_file_info(f"{base}/tuner.pkl").type == pafs.FileType.File


# The files of Tune's experiment state that `Tuner.restore` reads.
_TUNE_STATE_FILES = ("tuner.pkl", "experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl",
                     "callback-states-*.pkl")


def _budget_rungs(sweep):
    """(epochs, trials) of each stage that searches or promotes: early_stopping="budget"'s
    rungs, else the search alone."""
    return sweep.budgets if sweep.early_stopping == "budget" else [(sweep.max_epochs, sweep.trial_count)]


def _stage_experiments(sweep, name):
    """The Tune experiment of each stage of run `name`, in order, each resumed on its own:
    the search (a budget sweep's first rung), each further rung, the confirmation runs."""
    return [name, *(f"{name}-rung{k}" for k in range(2, len(_budget_rungs(sweep)) + 1)), f"{name}-confirm"]


def _damaged_tune_state(path):
    """The first of Tune's state files in experiment folder `path` (if there is one) that is
    cut short, or None. Tune saves its state in a staging folder and then copies it here file
    by file, not atomically: a launch killed mid-copy leaves a file that `Tuner.restore`
    cannot read, and Tune then starts the experiment over instead. Read without unpickling (no Ray, no
    TensorFlow): a pickle must run to its STOP opcode, a JSON file must parse."""
    import fnmatch
    import io
    import pickletools

    import pyarrow.fs as pafs

    fs, base = store.filesystem(path)
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        if info.type != pafs.FileType.File or not any(fnmatch.fnmatch(info.base_name, pattern)
                                                      for pattern in _TUNE_STATE_FILES):
            continue
        with fs.open_input_stream(info.path) as stream:
            content = stream.read()
        try:
            if content.startswith(b"\x80"):  # a pickle (search_gen_state-*.json is one too)
                for _ in pickletools.genops(io.BytesIO(content)):
                    pass
            else:
                json.loads(content)
        except ValueError:  # json's errors are ValueErrors too
            return f"{info.path} is cut short or damaged ({len(content)} bytes)"
    return None


def check_address(address, client=False):
    """`--address` is one that `ray.init` joins from a node: auto, local or host:port (the
    head's GCS port); else bad input, before Ray starts. With `client` (launch and validate),
    also ray://host:port, a Ray Client server: `lrsweep.run.client` runs the launch on the
    head node through it. Elsewhere not: Tune would run the experiment on the head node, its
    callbacks with it, so the store would be written there while this command reads its own.
    The same of RAY_ADDRESS where the launch would join it: without `--address`, and with
    `--address auto`, which `ray.init` replaces with RAY_ADDRESS."""
    if address:
        _check_one("address", address, client)
    from_env = _env_address()
    if (not address or address == "auto") and from_env is not None:
        _check_one("RAY_ADDRESS", from_env, client)


# host:port, a head's address as `--address` gives it: a name or IPv4 address, or IPv6 in brackets
_HOST_PORT = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):([0-9]+)")
# How long a ray:// address that refuses the connection is asked again: a server starting.
CLIENT_START_SECONDS = 10
# The logger of Ray's notice that it turns token authentication on.
TOKEN_NOTICE = "ray._private.authentication.authentication_token_setup"


def _argument(named):
    """How a message names where the address came from: `--address` or RAY_ADDRESS."""
    return "Argument `address`" if named == "address" else "Environment variable `RAY_ADDRESS`"


def _check_one(named, address, client):
    if address in ("auto", "local"):
        return
    argument = _argument(named)
    unset = "" if named == "address" else "; unset it, or pass --address local for a Ray of this launch's own"
    if address.startswith("ray://") and not client:
        raise LrsweepError(f"{argument} cannot be a Ray Client address (ray://) here: this command reads what its "
                           f"trials store, and through Ray Client they would run and store on the head node; run it "
                           f"on a node of the cluster with --address auto{unset}. Received: {named}={address!r}")
    port = _HOST_PORT.fullmatch(address.removeprefix("ray://"))
    if port and 0 < int(port.group(2)) < 65536:
        return
    dashboard = (" (an http:// address is the dashboard's: `lrsweep submit` takes it to run the sweep as a Ray job)"
                 if address.startswith(("http://", "https://")) else "")
    client_form = ", ray://HEAD:10001 (Ray Client)" if client else ""
    raise LrsweepError(f"{argument} must be auto, host:port (the head node's port, 6379 by default, IPv6 in "
                       f"brackets){client_form}{unset}. Received: {named}={address!r}{dashboard}")


def _env_address():
    """RAY_ADDRESS where it names a cluster to join: Ray sets it for the entrypoint of a Ray
    job. Not an http:// one, the dashboard's, exported for `ray job` commands."""
    value = os.environ.get("RAY_ADDRESS", "")
    return None if not value or value.startswith(("http://", "https://")) else value


def joins_cluster(address):
    """Whether a launch given `address` joins a cluster, rather than starting a Ray of its own."""
    return (address or _env_address() or "local") != "local"


def _ray_address(address):
    """Where the sweep runs: `--address`; else the cluster of the Ray job this launch is the
    entrypoint of (`_env_address`); else "local", a new Ray of our own, even where `ray
    start` left one running (which ray.init() would otherwise join). Token mode on to join
    one."""
    from_env = _env_address()
    if address == "auto" and from_env is None:
        os.environ.pop("RAY_ADDRESS", None)  # an http:// one: ray.init("auto") would try to join it
    address = address or from_env
    if not address:
        return "local"
    use_token_if_present()
    return address


def _ray_command():
    """How to run Ray's command line from this shell: `ray`, or where it is not on the PATH
    (a virtual environment not activated: `.venv/bin/python -m lrsweep ...`), the one beside
    this Python."""
    import shutil

    beside = os.path.join(os.path.dirname(sys.executable), "ray")
    found = shutil.which("ray")
    if not os.path.exists(beside) or (found and os.path.realpath(found) == os.path.realpath(beside)):
        return "ray"
    shown = os.path.relpath(beside)
    return shlex.quote(beside if shown.startswith(os.pardir) else shown)


def _ray_started_here():
    """The address of a Ray that `ray start` started on this machine and that still runs
    (the one `ray.init()` without an address would join), else None."""
    from ray._private.services import find_bootstrap_address, find_gcs_addresses

    address = find_bootstrap_address(None)  # the file `ray start` writes, `ray stop` removes
    return address if address and address in find_gcs_addresses() else None


def _named(address):
    """Where the address the launch joins came from: "address" (`--address`) or "RAY_ADDRESS"."""
    return "RAY_ADDRESS" if address == _env_address() else "address"


def check_answers(address):
    """A host:port to join, or a ray://HOST:PORT to run through, answers there as Ray's GCS
    (or Ray Client's server) does and takes this machine's token, said in seconds. Where
    nothing listens (a wrong port, a head that is down) ray.init waits minutes, logging its
    retries; on a GCS that refuses the token, or Ray Client's port, it logs a line a second
    for 20 s before its error (which names this machine's IP for 127.0.0.1); on the
    dashboard's port it waits for good. Ray Client tries for 30 s on any such ray:// one
    (the GCS's port among them), then says it timed out."""
    import socket

    named, received, shown = _named(address), address, address
    if address == "auto":
        address = shown = _auto_address()
        if address is None:  # (ray.init says so too, once the launch has printed its first line and made its folder)
            raise LrsweepError(f"{_argument(named)} reaches no Ray cluster: `auto` finds none on this machine (no "
                               f"`ray start` ran here, and RAY_ADDRESS names none); start one with `ray start --head`, "
                               f"or leave --address out for a Ray of the launch's own. Received: {named}={received!r}")
        if _env_address() in (None, "auto"):  # (else RAY_ADDRESS's, which ray.init joins under auto)
            shown = (f"{address}, which `auto` finds on this machine (where `ray start` last started or joined a "
                     f"cluster, until `ray stop`)")
        else:
            named, received = "RAY_ADDRESS", address
    client, target = address.startswith("ray://"), address.removeprefix("ray://")
    found = _HOST_PORT.fullmatch(target)
    if not found:
        return
    listens = ("serves Ray Client on port 10001 (`ray start --head`'s default)" if client else
               "listens on the port `ray start --head` printed (6379 by default)")
    # Ray Client's server listens a moment after `ray start --head` has returned (0.7 s here):
    # a refusal within that while is waited out
    refused_until = time.monotonic() + (CLIENT_START_SECONDS if client else 0)
    while True:
        try:
            socket.create_connection((found.group(1).strip("[]"), int(found.group(2))), timeout=5).close()
            break
        except ConnectionRefusedError:
            if time.monotonic() < refused_until:
                time.sleep(0.5)
                continue
            reason = "Connection refused"
        except OSError as e:
            reason = e.strerror or str(e) or type(e).__name__
        raise LrsweepError(f"{_argument(named)} reaches no Ray cluster: nothing answers at {shown} ({reason}); a "
                           f"head node {listens}. Received: {named}={received!r}")
    import grpc

    answer = _grpc_answer(target, _ping_ray_client if client else _ask_cluster_id)
    if answer == grpc.StatusCode.UNAUTHENTICATED:
        sent, where = _token_sent()
        raise LrsweepError(f"{_argument(named)} reaches a Ray cluster that refuses {sent}: {where} the token its "
                           f"head was started with (`{_ray_command()} get-auth-token` on the head prints it). "
                           f"Received: {named}={received!r}")
    if answer == grpc.StatusCode.UNIMPLEMENTED:
        other = ("answers as another gRPC server (the GCS's port, say, which `--address HOST:PORT` joins from a node "
                 "of the cluster)" if client else "answers as another gRPC server (Ray Client's port, say, which "
                 "`--address ray://HOST:PORT` runs through)")
    elif answer == grpc.StatusCode.UNAVAILABLE:
        other = ("answers as an HTTP server (the dashboard's port, say, which `submit --address http://HOST:PORT` "
                 "takes)")
    else:
        return
    raise LrsweepError(f"{_argument(named)} reaches no Ray {'Client' if client else 'cluster'}: {shown} {other}; a "
                       f"head node {listens}. Received: {named}={received!r}")


def _auto_address():
    """The address `auto` joins, as ray.init finds it: RAY_ADDRESS, else the head node that
    `ray start` last started on this machine (the file it writes, which a head stopped but
    by `ray stop` leaves behind), else a GCS running here; None where there is none."""
    from ray._private.services import get_ray_address_from_environment

    said = logging.getLogger("ray._private.services")  # "Found multiple active Ray instances": ray.init says it too
    level = said.level
    said.setLevel(logging.ERROR)
    try:
        return get_ray_address_from_environment("auto", None)
    except ConnectionError:
        return None
    finally:
        said.setLevel(level)


def _token_sent():
    """(What this process sent, where the right token goes), as Ray sends it: a token only
    in token mode (which `use_token_if_present` turns on where one exists, unless
    RAY_AUTH_MODE says otherwise)."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    from lrsweep.run.jobs import auth_token

    where, token = auth_token()
    holder = where if token else f"{where} or RAY_AUTH_TOKEN"  # where a token goes: the one Ray reads first
    if not is_token_auth_enabled() and os.environ.get("RAY_AUTH_MODE"):
        return (f"a client whose RAY_AUTH_MODE ({os.environ['RAY_AUTH_MODE']}) sends no token",
                f"set RAY_AUTH_MODE=token (or unset it), with {holder} holding")
    if token:
        return f"the token in {where}", f"put in {where}"
    return "a machine without its token", f"put in {holder}"


def _ping_ray_client(channel):
    from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc

    ping = ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING)
    ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(ping, timeout=5)


def _ask_cluster_id(channel):
    """The GCS's first answer to a joining driver (Ray's own first call, `gcs_client.cc`)."""
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(gcs_service_pb2.GetClusterIdRequest(),
                                                                      timeout=5)


# How gRPC's failure to connect says that an HTTP/1 server answered (grpcio 1.85; the
# dashboard's port: "Failed parsing HTTP/2"); a wording it drops leaves such an address to Ray.
HTTP_SAID = ("Failed parsing HTTP/2", "http1.x")


def _grpc_answer(target, ask):
    """How the server at `target` (host:port, which took a TCP connection) answers
    `ask(channel)` over a channel as Ray makes it (TLS, this machine's token): OK or an
    error's status code, UNAVAILABLE only where an HTTP server answered (the dashboard's).
    None where that says nothing for sure (any other connection failure; TLS settings that
    do not load; the token's interceptor failing): Ray's own tries then say what is wrong."""
    import grpc
    from ray._private.grpc_utils import init_grpc_channel
    from ray.util.client.common import GRPC_OPTIONS

    use_token_if_present()
    try:
        channel = init_grpc_channel(target, options=GRPC_OPTIONS, asynchronous=False)
    except Exception:  # noqa: BLE001  (RAY_USE_TLS without its certificates: Ray says so)
        return None
    try:  # at once, not once the channel is ready: closing a channel watched for that took 0.2 s
        ask(channel)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNAVAILABLE and not any(said in (e.details() or "") for said in HTTP_SAID):
            return None  # a name gRPC's resolver does not know, a forwarded port whose server is not up yet, ...
        return e.code()
    except Exception:  # noqa: BLE001  (the token's interceptor failing: Ray's to say)
        return None
    finally:
        channel.close()
    return grpc.StatusCode.OK


def use_token_if_present():
    """A cluster started where a token exists requires it, and a client that joins it (a
    driver, the Jobs client) must be told (RAY_AUTH_MODE=token), or Ray answers with a
    misleading "Failed to connect". Ray's own rule, as `ray start --head` applies it: token
    mode when a token exists and no mode is set."""
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available)

    logging.getLogger(TOKEN_NOTICE).setLevel(logging.ERROR)  # launch's own lines say how to sign in
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _start_ray(address, dashboard_host, print_fn):
    import ray

    # The dashboard's line below says how to sign in; Ray's own notice that tokens are on
    # (as it turns them on for a Ray of our own, or for joining one) repeats it.
    logging.getLogger(TOKEN_NOTICE).setLevel(logging.ERROR)
    if address is None and _env_address() is None and (running := _ray_started_here()):
        print_fn(f"warning: the Ray that `ray start` started on this machine runs ({running}); this launch starts "
                 "one of its own beside it, whose trials compete with that one's for the cores: --address auto "
                 "runs the sweep there")
    address = _ray_address(address)
    if address == "local" and dashboard_host not in ("127.0.0.1", "localhost", "::1"):
        print_fn(f"warning: the dashboard listens on {dashboard_host}: anyone who reaches it and holds the token "
                 "can run code on this machine")
    # A Ray of our own starts no workers for the driver as it connects (Ray's default, one
    # per CPU): on two cores they took CPU from the processes importing TensorFlow, and a
    # cold launch's first epoch came 2-3 s later (benchmarks/README.md).
    own = {"_system_config": {"prestart_worker_first_driver": False}} if address == "local" else {}
    try:
        with _ctrl_c_after_start(address == "local"):
            context = ray.init(address=address, include_dashboard=True, dashboard_host=dashboard_host,
                               configure_logging=True, logging_level="WARNING", log_to_driver=True,
                               ignore_reinit_error=True, **own)
    except ConnectionError as e:
        if address == "local":
            raise
        named = _named(address)
        raise LrsweepError(f"{_argument(named)} reaches no Ray cluster this launch can join ("
                           f"{str(e).split('. ')[0].rstrip('.')}): start one with `ray start --head`, or leave "
                           f"--address out for a Ray of the launch's own; a cluster that is up refuses a machine "
                           f"without its token (~/.ray/auth_token, or RAY_AUTH_TOKEN). Received: {named}={address!r}"
                           ) from None
    url = context.dashboard_url
    if url:
        url = url if url.startswith("http") else f"http://{url}"
        print_fn(f"Ray dashboard: {url}  (sign in with the token that `{_ray_command()} get-auth-token` prints)")
    return context


@contextlib.contextmanager
def _ctrl_c_after_start(own):
    """A Ctrl-C while a Ray of the launch's `own` starts comes once `ray.init` has returned,
    where `stop_ray` stops every process of it: in the middle of `ray.init` (after the
    raylet had started its agents) it left the dashboard's and the runtime environments'
    agents running. A second Ctrl-C comes at once. (A Python handler, not a blocked signal:
    Ray's threads, which a blocked signal would reach instead, never run it.)"""
    if not own or threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []

    def later(signum, frame):
        if caught:
            raise KeyboardInterrupt
        caught.append(signum)

    previous = signal.signal(signal.SIGINT, later)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _stop_on_sigterm(finish_hint=None):
    """SIGTERM to the launch's process (`kill PID`, `timeout --foreground`, a container's
    stop; `ray job stop`, which kills the job after RAY_JOB_STOP_WAIT_TIME_S: 60 s for a job
    `submit` started, Ray's default 3 s otherwise) stops the launch as Ctrl-C does:
    Tune saves its state, what ended is stored, and the launch says how to finish the run.
    `ray.init` makes it exit the driver at once (sys.exit), which stored nothing of the
    trials Tune had not yet saved as ended. A second one skips Tune's last save, as a second
    Ctrl-C does. (A SIGTERM to the whole process group, as plain `timeout` sends it, also
    reaches the services of a Ray this launch started, which block SIGINT but not SIGTERM,
    and they end at once: `_exit_if_own_ray_ends`.)

    A launch run through Ray Client stops the same way when its actor ends, on the first of
    the parent-death signals Linux may send it (`client.PARENT_ENDED`); the others are
    ignored."""
    from lrsweep.run.client import PARENT_ENDED

    ended = []

    def parent_ended(signum, frame):
        if not ended:  # (a signal coming as the handler starts runs it again, before it could ignore them)
            ended.append(signum)
            signal.signal(signum, signal.SIG_IGN)  # ignored also as Python exits, where it resets its own handlers
            signal.raise_signal(signal.SIGINT)

    _stopping.clear()  # (a process that runs launches one after another)

    def terminated(signum, frame):
        _exit_if_own_ray_ends(finish_hint)
        signal.raise_signal(signal.SIGINT)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminated)
        signal.signal(PARENT_ENDED, parent_ended)


# How often, after a SIGTERM, the launch looks whether the services of its own Ray ended too;
# and how long it then lets Tune's last save of its state, under way as they end, finish
# (it copies the files one by one: one cut short makes the run one --resume refuses).
RAY_LOST_POLL_SECONDS = 0.2
RAY_LOST_GRACE_SECONDS = 1.0
_stopping = threading.Event()  # `stop_ray` stops the Ray: its services' end is no news then


def _exit_if_own_ray_ends(finish_hint):
    """After a SIGTERM: where the services of the Ray this launch started end too (the whole
    process group signalled, as plain `timeout` signals it), Tune's stop, which asks them to
    free its trials' resources, waited 60 s for them, and Ray then aborted the process
    ("Failed to connect to GCS"), with no word of the run. Instead the launch says so, with
    `finish_hint` (the command that finishes the run), and exits 1 at once: what ended is
    stored (each trial as it ends), and Tune's state as it last saved it. A daemon thread
    that watches the raylet and the GCS (once per launch); none where the launch joined a
    cluster."""
    ray = sys.modules.get("ray")
    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    services = [info.process for kind in ("raylet", "gcs_server")
                for info in (node.all_processes.get(kind) or [] if getattr(node, "head", False) else [])]
    if not services or any(thread.name == "lrsweep-own-ray" for thread in threading.enumerate()):
        return

    def watch():
        while all(service.poll() is None for service in services) and not _stopping.is_set():
            time.sleep(RAY_LOST_POLL_SECONDS)
        time.sleep(RAY_LOST_GRACE_SECONDS)
        if _stopping.is_set():
            return
        sys.stdout.flush()
        print(f"lrsweep: stopped: the SIGTERM reached the launch's own Ray too (sent to its whole process group, as "
              f"plain `timeout` sends it; `timeout --foreground` or `kill PID` signal the launch alone), and it ended "
              f"under the trials; what ended is stored{'; ' + finish_hint if finish_hint else ''}", file=sys.stderr,
              flush=True)
        os._exit(1)

    # Ray stops its services at exit where no `stop_ray` did (an error): no news either. (After
    # Ray's own handler, so run before it.)
    atexit.register(_stopping.set)
    threading.Thread(target=watch, name="lrsweep-own-ray", daemon=True).start()


def check_trials_fit(sweep):
    """On a Ray this launch started (one node, no autoscaler to add more), a trial that asks
    for more CPUs or GPUs than the node has would never start: Tune and Ray's autoscaler
    would say so every half minute, forever (`check_local_fit` refuses it before Ray starts;
    this checks what Ray found). A cluster joined may grow (its autoscaler), so
    there it is a warning, also where the cluster has enough in all but no node has enough
    (Ray places each trial on one node), as is Tune's storage on a folder of this machine
    where the cluster has nodes on others."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    own = getattr(node, "head", False)
    nodes = alive_node_resources()
    if not sum(node_trial_slots(sweep, nodes)):
        no_node_fits(sweep, own, nodes)
    if not own:
        _check_storage_reached(sweep, ray)


def check_local_fit(sweep):
    """Before a launch starts a Ray of its own (one node: this machine), refuse trials that
    ask for more CPUs or GPUs than that Ray will have, as Ray counts them as it starts:
    bad input, answered without the seconds Ray's start and stop take, and by the command
    line's `launch` before it downloads the data (not by `validate`, which imports
    no Ray). Ray's count is a private part of it: where it moved or fails (a malformed
    RAY_OVERRIDE_RESOURCES, which Ray's start names itself), `check_trials_fit` finds the
    same once Ray has started."""
    from lrsweep.quiet import errors_only

    try:
        from ray._private.resource_and_label_spec import ResourceAndLabelSpec

        # RAY_OVERRIDE_RESOURCES if set, else the CPUs this process may use and the GPUs it
        # sees; Ray's note on a container's CPU quota comes once, from its start
        with errors_only("ray._private.utils"):
            spec = ResourceAndLabelSpec().resolve(is_head=True, node_ip_address="127.0.0.1")
    except (ImportError, AttributeError, TypeError, ValueError):
        return
    nodes = [{"CPU": spec.num_cpus, "GPU": spec.num_gpus}]
    if not sum(node_trial_slots(sweep, nodes)):
        no_node_fits(sweep, True, nodes)


def no_node_fits(sweep, own, nodes):
    """Say why no node of `nodes` (each one's resources) can hold a trial of the sweep:
    refused on a Ray this launch started (one node), a warning on a cluster joined, for
    each of CPUs and GPUs where no node has enough, or that no node has both."""
    asked = {"CPU": sweep.cpus, "GPU": sweep.gpus}
    each = {kind: f"{n:g} {kind}{'s' * (n != 1)}" for kind, n in asked.items()}  # "1 GPU", "0.5 GPUs"
    largest = {kind: max((n.get(kind, 0) for n in nodes), default=0) for kind in asked}
    total = {kind: sum(n.get(kind, 0) for n in nodes) for kind in asked}
    # (one of them is short wherever a node has no slot: `pool.slots` counts as Ray does)
    short = [kind for kind in asked if asked[kind] > largest[kind]]
    if own:
        kind = short[0]
        raise LrsweepError(f"Argument `resources` asks for {each[kind]} per trial, and the Ray this launch starts "
                           f"has {total[kind]:g} (this machine's): no trial could start. Received: "
                           f"resources={dict(sweep.resources)!r} (or join a larger cluster with --address)")
    wait = "they wait for nodes its autoscaler adds (forever, where it adds none)"
    for kind in short:
        if asked[kind] > total[kind]:
            warn(f"the trials ask for {each[kind]} each, and the cluster joined has {total[kind]:g} now: "
                 f"{wait}")
        else:
            warn(f"the trials ask for {each[kind]} each, and no node of the cluster joined has that many "
                 f"now (the largest has {largest[kind]:g}, {total[kind]:g} in all; a trial runs on one node): {wait}")
    if not short:
        warn(f"the trials ask for {each['CPU']} and {each['GPU']} each, and no node of the cluster joined "
             f"has both now (a trial runs on one node): {wait}")


def _check_storage_reached(sweep, ray):
    """Ray Train refuses a checkpoint on a node that does not see Tune's storage (its marker
    file): with a folder of this machine, every trial on another machine saves no checkpoint
    (`trial.checkpoints_reach_storage`; Ray would fail it), so a retry or a `--resume` starts
    it over, unless the folder is shared (NFS)."""
    storage = storage_path(sweep)
    if store.is_uri(storage):
        return
    alive = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    here = alive.get(ray.get_runtime_context().get_node_id())
    others = sorted(set(alive.values()) - {here})
    if others:
        warn(f"Tune's storage {storage} is a folder of this machine ({here}), and the cluster has nodes on others "
             f"({', '.join(others)}): their trials save no checkpoint (a retry or --resume starts them over) unless "
             f"the folder is one they share; give --storage (or the sweep's storage) s3://..., gs://... or a shared "
             f"folder")


def stop_ray():
    """`ray.shutdown()`, less the second it spends on the autoscaler's monitor: Ray stops the
    GCS first, the monitor's SIGTERM handler then tries to report to it and is killed a
    second later (Ray 2.60). A Ray this process started has no autoscaled nodes for its
    monitor to clean up, so the monitor is killed first, at once. A driver that joined a
    running cluster owns no monitor, and leaves the cluster's alone."""
    _stopping.set()
    ray = sys.modules.get("ray")
    try:
        node = getattr(ray._private.worker, "_global_node", None)
    except AttributeError:  # Ray not imported, or an import of it that a Ctrl-C cut short: no Ray started
        return
    kill_monitor = getattr(node, "kill_monitor", None)
    if kill_monitor is not None and getattr(node, "head", False):
        kill_monitor(check_alive=False)
    ray.shutdown()


def keep_registered_trainables():
    """Tune looks a trial's trainable up by name in the cluster's key-value store four or
    five times per trial (`Trial()`, its placement group, its actor, its reset), each a GCS
    round trip and an unpickle of the trainable class: 2-3 ms of driver CPU per trial
    (Ray 2.60). Registered names live under this driver's own job and only this process
    registers them, so the driver's registry keeps what it has read once, until the name
    is registered again."""
    from ray.tune import registry

    tune_registry = registry._global_registry
    if getattr(tune_registry, "lrsweep_kept", None) is not None:
        return
    kept = {}
    read, contains, register, unregister = (tune_registry.get, tune_registry.contains, tune_registry.register,
                                            tune_registry.unregister)

    def get(category, key):
        if (category, key) not in kept:
            kept[category, key] = read(category, key)
        return kept[category, key]

    def has(category, key):
        return (category, key) in kept or contains(category, key)

    def put(category, key, value):
        kept.pop((category, key), None)
        register(category, key, value)

    def drop(category, key):
        kept.pop((category, key), None)
        unregister(category, key)

    tune_registry.get, tune_registry.contains, tune_registry.register, tune_registry.unregister = get, has, put, drop
    tune_registry.lrsweep_kept = kept


def trial_slots(sweep):
    """How many trials the cluster runs at once, each on one node. Tune keeps only one trial
    pending for a searcher unless told this (`max_concurrent_trials`): without it the
    second worker would wait for the first to finish starting."""
    return max(1, sum(node_trial_slots(sweep, alive_node_resources())))


def alive_node_resources():
    """The resources of each node of the cluster alive now."""
    import ray

    return [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]


def node_trial_slots(sweep, nodes):
    """How many of the sweep's trials each of `nodes` (each one's resources) runs at once."""
    from lrsweep.run.pool import node_slots

    return [node_slots(resources, sweep.cpus, sweep.gpus) for resources in nodes]


def decision_epochs(sweep):
    """The epochs at which ASHA may stop a trial, where a trial must report: its rungs."""
    return sweep.rungs if sweep.early_stopping == "asha" else []


def training_setup(sweep):
    """What a trial needs of the sweep, as plain data."""
    return {"decision_epochs": decision_epochs(sweep), "batch_size": sweep.batch_size,
            "max_epochs": sweep.max_epochs, "granularity": sweep.granularity,
            "metric": sweep.metric, "mode": sweep.mode, "seed": sweep.seed, "cpus": sweep.cpus,
            "model": sweep.model, "model_args": dict(sweep.model_args), "optimizer": sweep.optimizer,
            "optimizer_args": dict(sweep.optimizer_args), "checkpoint_seconds": sweep.checkpoint_seconds}


def sweep_data(sweep, offline=False):
    """The sweep's dataset as its trials see it: loaded, subsampled, split and scaled
    (`offline`: None where it would be downloaded)."""
    from lrsweep.data import load_dataset
    from lrsweep.models import check_model_shape

    data = load_dataset(sweep.dataset, data_dir=sweep.data_dir, subsample=sweep.subsample,
                        validation_split=sweep.validation_split, scale=sweep.scale, seed=sweep.seed,
                        offline=offline)
    if data is not None:
        check_model_shape(sweep.model, sweep.model_args, data.input_shape)
    return data


def trial_arrays(data):
    """What every trial receives of the dataset (through the object store): its arrays."""
    return {"x_train": data.x_train, "y_train": data.y_train, "x_val": data.x_val, "y_val": data.y_val,
            "num_classes": data.num_classes}


def launch(sweep, *, name=None, address=None, resume=False, dashboard_host="127.0.0.1", print_fn=print, data=None,
           finish_hint=None):
    """Run `sweep`; returns (run name, dataset name, exit status: 0; 1 if some trial ended in
    error; 130 if it was stopped with Ctrl-C before every trial ran, in the search, a rung or
    the confirmation runs). `data`: the sweep's `sweep_data` as the checks read it, in a list
    that this takes it out of: the object store's copy is to be the only one the run keeps.
    `finish_hint`: the command that finishes the run, said where the launch ends at once
    (`_exit_if_own_ray_ends`)."""
    name = run_name(sweep, name)
    check_name("name", name)  # before its folder is made
    import ray

    if not joins_cluster(address) and not ray.is_initialized():  # a Ray this launch starts (not one it is in)
        check_local_fit(sweep)
    if joins_cluster(address):  # before the run's folder is made: a launch refused here leaves none
        check_answers(_ray_address(address))
    folder = f"{storage_path(sweep)}/{name}"
    with run_files.holding(folder, name):
        check_launch(sweep, name, resume)  # again: another launch may have taken the name since the first check
        # the data as an argument only: a name here would keep it beside the object store's copy
        return _launch(sweep, name, address, resume, dashboard_host, print_fn,
                       data.pop() if data else sweep_data(sweep), folder, finish_hint)


def _launch(sweep, name, address, resume, dashboard_host, print_fn, data, folder, finish_hint):
    run_files.save_settings(folder, sweep, data)  # on a resume too: the results folder it stores into is the run's now
    print_fn(f"sweep {name}: {data.name} ({len(data.x_train)} training rows, validation: {data.validation}), "
             f"{sweep.trial_count} trial{'s' * (sweep.trial_count != 1)} of up to {sweep.max_epochs} epochs")

    _start_ray(address, dashboard_host, print_fn)
    _stop_on_sigterm(finish_hint)
    check_trials_fit(sweep)
    from lrsweep.run import pool

    idle = pool.idle_seconds()
    if not sweep.gpus:  # CPU trials train on warm trainers, which start importing TensorFlow now
        pool.warm(sweep.cpus, idle)
    # Tune saves its state (for --resume) every 10 s, and at once whenever a trial has saved
    # as many checkpoints since as it keeps (2): with a `checkpoint_seconds` of a few seconds
    # that is every other checkpoint, which is what keeps a resume close to the kill, and Tune
    # warns about it at each save, naming its own settings. A user's own setting stands.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's result grid looks for the per-trial logs switched off above; the store has them.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # Tune's closing lines list unfinished trials and point to its own Tuner.restore: the
    # progress lines name errors, and after a Ctrl-C the launch's last line gives `--resume`.
    logging.getLogger("ray.tune.tune").addFilter(_not_said_better)
    logging.getLogger("ray.tune.execution.tune_controller").addFilter(_not_said_better)
    from ray import tune

    keep_registered_trainables()
    from lrsweep.run.recorder import Recorder
    from lrsweep.run.search import FixedConfigs, ToTheEnd, scheduler, search_algorithm
    from lrsweep.run.trial import data_seconds, train

    arrays = trial_arrays(data)
    setup = {**training_setup(sweep), "trainer_idle_seconds": idle, "data_seconds": data_seconds(arrays)}
    import ray

    # In a list: a reference at the top would reach the trial resolved, and the trial hands
    # the reference itself on to its trainer (`pool`).
    trainable = tune.with_resources(tune.with_parameters(train, data=[ray.put(arrays)], setup=setup),
                                    {"cpu": sweep.cpus, "gpu": sweep.gpus})
    settings = {**setup, "model_label": sweep.model, "dataset_source": data.source,
                "training_settings": json.dumps(sweep.training_settings(), sort_keys=True)}
    dataset_name = data.name
    del data, arrays  # the object store holds the one copy the trials share

    def recorder(total):
        return Recorder(results=sweep.results, dataset=dataset_name, sweep_name=name, settings=settings, total=total,
                        print_fn=print_fn)

    rungs, experiments = _budget_rungs(sweep), _stage_experiments(sweep, name)
    first = {"budget": rungs[0][0]} if len(rungs) > 1 else {}
    errors, finished = _run_stage(tune, trainable, sweep, experiments[0], resume, *search_algorithm(sweep),
                                  scheduler(sweep), recorder(sweep.trial_count), param_space=first)
    # early_stopping="budget": the best of each rung train again from scratch at the next
    # a print_fn whose output's reader has gone (`cli._Progress.gone`) starts no further stage
    for k in range(1, len(rungs)):
        finished = finished and not getattr(print_fn, "gone", False)
        if not finished:
            break
        configs = promoted_configs(sweep, name, dataset_name, rungs[k - 1][0], rungs[k][1], rungs[k][0])
        if not configs:
            print_fn(f"rung {k + 1} of {len(rungs)}: no trial of rung {k} completed; nothing to train again")
            break
        print_fn(f"rung {k + 1} of {len(rungs)}: the best {len(configs)} again from scratch, the schedule fitted "
                 f"to {rungs[k][0]} epochs")
        more, finished = _run_stage(tune, trainable, sweep, experiments[k], resume,
                                    FixedConfigs(configs, sweep.metric, sweep.mode), len(configs), ToTheEnd(),
                                    recorder(len(configs)))
        errors += more
    # An interrupted search (Ctrl-C) ends the launch; `--resume` finishes it and then confirms.
    finished = finished and not getattr(print_fn, "gone", False)
    configs = confirmation_configs(sweep, name, dataset_name) if sweep.confirm_seeds and finished else []
    if configs:
        print_fn(f"confirming: each family's best trial again with {sweep.confirm_seeds} seeds, to "
                 f"{sweep.max_epochs} epochs ({len(configs)} trials)")
        more, finished = _run_stage(tune, trainable, sweep, experiments[-1], resume,
                                    FixedConfigs(configs, sweep.metric, sweep.mode), len(configs), ToTheEnd(),
                                    recorder(len(configs)))
        errors += more
    return name, dataset_name, 130 if not finished else 1 if errors else 0


def _not_said_better(record):
    """Not Tune's lines that lrsweep's own say better: its closing pointer to Tuner.restore,
    and its warning of a store that cannot be written (the launch's error line names it)."""
    message = record.getMessage()
    return not (message.startswith(("Experiment has been interrupted", "Trials did not complete"))
                or message.startswith("Trial controller checkpointing failed: cannot write the"))


def _run_stage(tune, trainable, sweep, experiment, resume, search, num_samples, scheduler, recorder, param_space=None):
    """One Tune experiment of the sweep (its search, or its confirmation runs), or its
    continuation from Tune's saved state (the searcher's state and the Recorder come back
    with it); returns (trials that ended in error, whether every trial ran: not so after
    a Ctrl-C). `param_space` holds values every trial's config gets besides the searcher's."""
    path = f"{storage_path(sweep)}/{experiment}"
    if resume and tune_state_exists(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        _record_here(tuner, recorder)
        _count_stored_trials(tuner, sweep, recorder, num_samples, param_space or {})
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space or {},
            tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, search_alg=search,
                                        scheduler=scheduler, num_samples=num_samples, reuse_actors=True,
                                        max_concurrent_trials=trial_slots(sweep)),
            run_config=tune.RunConfig(name=experiment, storage_path=storage_path(sweep), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                                      # a trial's latest two checkpoints: the state Tune saves every
                                      # 10 s names the latest, for `--resume`, long before a trial
                                      # that saves every 60 s (the default) deletes it
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                      callbacks=[recorder, *scheduler.callbacks()]),
        )
    keep = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    try:
        grid = tuner.fit()
    finally:
        if keep is not None:  # Tune leaves its Ctrl-C handler in place after a stage that ended by itself:
            signal.signal(signal.SIGINT, keep)  # a Ctrl-C between stages set a flag nobody reads
    # Tune marks the last result of a trial that ran to its end (or was stopped by the
    # scheduler) done; a Ctrl-C stops the running trials TERMINATED all the same, not done.
    ended = [result.error is not None or bool(result.metrics and result.metrics.get("done")) for result in grid]
    return grid.num_errors, _all_drawn(tuner, grid, num_samples) and all(ended)


def _all_drawn(tuner, grid, num_samples):
    """Whether the stage has every trial its searcher drew: its `num_samples` (a restored
    stage's as it was launched; before each configuration was drawn once, a search of a
    space of fewer took num_samples trials), or fewer where the searcher ended the search
    itself (`NewConfigs.spent`, `FixedConfigs.spent`). Through Ray Client's API Tune runs on the head: num_samples."""
    local = _local_tuner(tuner)
    if local is None:
        return len(grid) == num_samples
    config = local._tune_config
    return len(grid) == config.num_samples or getattr(config.search_alg, "spent", False)


def _local_tuner(tuner):
    """The Tuner's own part running in this process; None through Ray Client's API (the
    API's ray://; the CLI's ray:// runs the launch on the head), where Tune runs there."""
    return getattr(tuner, "_local_tuner", None)


def _record_here(tuner, recorder):
    """The Recorder of a restored stage is the one Tune pickled with it, which writes where
    the run was launched: into the store of the launch that started it (a run whose results
    folder has moved since, `--results` given another, wrote there, and the ranking read
    here) and with its settings (the data's local copy). This launch's `recorder` takes its
    place; Tune gives it the restored one's state (by position) as the stage starts."""
    local = _local_tuner(tuner)
    if local is None:  # Tune on a cluster's head
        return
    run_config = local.get_run_config()  # Tuner.restore takes no callbacks
    run_config.callbacks = [recorder if isinstance(callback, type(recorder)) else callback
                            for callback in run_config.callbacks]


def _count_stored_trials(tuner, sweep, recorder, num_samples, param_space):
    """A stage resumed after a kill counts the trials that began after Tune's last save and
    ended stored as done (`NewConfigs.resume_with`, `FixedConfigs.resume_with`): Tune's state
    does not hold them, and the stage would draw as many more (storing more than num_samples
    trials) or run their configs again. `param_space`: what Tune adds to the stage's configs."""
    from lrsweep.run.recorder import trial_key
    from lrsweep.run.search import FixedConfigs, NewConfigs
    from lrsweep.run.trial import worst_value

    local = _local_tuner(tuner)
    searcher = local._tune_config.search_alg if local is not None else None  # None: Tune on a cluster's head
    if not isinstance(searcher, (FixedConfigs, NewConfigs)):
        return
    trials = store.read_frame(sweep.results, "trials", recorder.dataset, recorder.sweep_name)
    trials = trials[trials["status"].isin(["completed", "early_stopped", "diverged"])]
    worst = worst_value(sweep.metric, sweep.mode)
    stored = []
    for _, trial in trials.iterrows():
        label = f"{trial['optimizer']}/{trial['family']}"
        params, value = json.loads(trial["params"]), trial[f"final_{sweep.metric}"]
        epochs = sweep.max_epochs if math.isnan(trial["budget"]) else trial["budget"]  # null: stored before budgets
        stored.append({"trial_id": trial["trial_id"], "label": label, "params": params, "status": trial["status"],
                       "key": trial_key(label, params, trial["seed"], trial["stage"], epochs, recorder.settings),
                       "value": float(value) if trial["status"] != "diverged" and math.isfinite(value) else worst})
    scheduler = local._tune_config.scheduler

    def counted(told):  # as Tune restores the searcher (`search._count_safely`), only where some are new
        recorder.count_stored(told)
        if hasattr(scheduler, "record_stored"):  # ASHA: the trials after the resume are judged against them too
            ids = {trial["trial_id"] for trial in told}
            scheduler.record_stored(_epoch_values(sweep, recorder, trials[trials["trial_id"].isin(ids)], worst))

    if isinstance(searcher, FixedConfigs):
        searcher.resume_with(stored, lambda config: recorder.key_of({**param_space, **config}), counted)
    else:
        budget = param_space.get("budget", sweep.max_epochs)
        searcher.resume_with([trial for trial in stored if trial["key"][3:] == ("search", budget)], num_samples,
                             counted)


def _epoch_values(sweep, recorder, trials, worst):
    """{trial id: {epoch: the sweep's metric it reported then}} of stored `trials` (rows of
    `trials`): `worst` at the epoch a diverged trial ended, and where the metric is not a
    finite number."""
    epochs = store.read_frame(sweep.results, "epochs", recorder.dataset, recorder.sweep_name)
    epochs = epochs[epochs["trial_id"].isin(trials["trial_id"])]
    diverged = set(trials.loc[trials["status"] == "diverged", "trial_id"])
    values = {}
    for trial_id, rows in epochs.groupby("trial_id"):
        values[trial_id] = {int(epoch): float(value) if math.isfinite(value) else worst
                            for epoch, value in zip(rows["epoch"], rows[sweep.metric])}
        if trial_id in diverged:
            values[trial_id][int(rows["epoch"].max())] = worst
    return values


def _search_trials(sweep, name, dataset):
    trials = store.read_frame(sweep.results, "trials", dataset)
    return trials[(trials["sweep"] == name) & (trials["stage"] == "search")]


def _config_of(sweep, trial, **more):
    """The trial config that trains stored trial `trial` (a row of `trials`) again."""
    import json

    from lrsweep.sweep.space import trial_config

    label = f"{trial['optimizer']}/{trial['family']}"
    return {**trial_config(sweep.arms[label], json.loads(trial["params"])), "seed": int(trial["seed"]), **more}


def promoted_configs(sweep, name, dataset, budget, count, next_budget):
    """The configs of the next rung of early_stopping="budget": the `count` best
    configurations of run `name` trained to `budget` epochs (completed, by the sweep's metric
    at their last epoch), each again from scratch, with its own seed, to `next_budget` epochs.
    A configuration drawn twice (a family of fixed parameters, a search drawing a value again;
    also a trial run again after a kill) trains the same way each time: it goes on once."""
    trials = _search_trials(sweep, name, dataset)
    column = f"final_{sweep.metric}"
    done = trials[(trials["budget"] == budget) & (trials["status"] == "completed") & trials[column].notna()]
    best = done.sort_values([column, "trial_id"], ascending=[sweep.mode == "min", True])
    best = best.drop_duplicates(["optimizer", "family", "params", "seed"]).head(count)
    return [_config_of(sweep, trial, budget=next_budget) for _, trial in best.iterrows()]


def confirmation_configs(sweep, name, dataset):
    """Each family's best search trial of run `name` (by the ranking's metric), once per
    confirmation seed, to `max_epochs`. Seed k (the sweep's seed + k) is the same for every
    family, so that the ranking compares families run for run."""
    from lrsweep.results.rank import rank

    trials = _search_trials(sweep, name, dataset)
    if trials.empty:
        return []
    configs = []
    for _, best in rank(trials, sweep.metric).dropna(subset=["best_trial"]).iterrows():
        trial = trials[trials["trial_id"] == best["best_trial"]].iloc[0]
        configs += [_config_of(sweep, trial, seed=sweep.seed + k, stage="confirm")
                    for k in range(1, sweep.confirm_seeds + 1)]
    return configs
