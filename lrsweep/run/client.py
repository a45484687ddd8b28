"""`launch --address ray://HOST:PORT`: the launch runs on the cluster's head node through
Ray Client, attached to this command.

Ray Tune runs an experiment on the head node when its driver connects through Ray Client;
lrsweep runs the whole launch there, the store's writes and the ranking with it. The
current folder is uploaded as its working directory (as `submit` uploads it), and
`Launch`, an actor on the head node, runs the launch command in it as a Ray job's
supervisor runs its entrypoint: RAY_ADDRESS the cluster's, output unbuffered (and the
warnings this command has printed in `errors.SAID`, not to be given twice). This command
prints the launch's output as it comes, passes Ctrl-C (and SIGTERM) on to it, which then
stops as a launch on this machine stops, and exits with its exit status. The data, the
results and Tune's state are read and written on the head node, at the paths this folder
gives them.

If this command's connection ends (the machine sleeps, the network drops, the command is
killed), Ray Client ends its session after its grace period and the actor ends with it;
the launch, whose parent-death signal is `PARENT_ENDED`, then stops as on Ctrl-C, resumable
with `--resume` under the name this command gave it.
"""

import codecs
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

from lrsweep.errors import SAID, LrsweepError, said
from lrsweep.quiet import discard

# How long one `read` waits on the head for output before it answers with none.
READ_SECONDS = 0.5
# what a launch whose output nobody reads any more (`launch | head`) says as it exits 141
UNREAD = "the launch stopped, as the reader of its output stopped reading"
ENDED_UNREAD = "the reader of its output stopped reading as the launch ended; the run is stored"  # ... exit 141
# How many times to ask for a session whose start failed on the head.
SESSION_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1
# The launch's parent-death signal, which it takes once, whenever it comes: not SIGTERM,
# whose second coming skips Tune's last save (as a second Ctrl-C does), since Linux sends it
# again for each thread of the actor's worker it passes the launch on to as that worker ends
# (two in one of eight lost connections on this machine; `driver._stop_on_sigterm`).
PARENT_ENDED = signal.SIGUSR2
# The launch's environment variable holding the arguments its resume command gives back (JSON).
TYPED = "LRSWEEP_TYPED_ARGUMENTS"
# Ray's setting that a worker SIGKILLs its child processes as it exits: off for the actor.
KILLS_CHILDREN = "RAY_kill_child_processes_on_worker_exit"


def client_address(address):
    """The Ray Client address (ray://) the launch is to run through, as ray.init takes it:
    `--address`, or RAY_ADDRESS where `--address` is not given or is auto; else None."""
    from_env = os.environ.get("RAY_ADDRESS", "")
    if address and address.startswith("ray://"):
        return address
    if address in (None, "", "auto") and from_env.startswith("ray://"):
        return from_env
    return None


def _prctl():
    """Linux's prctl, looked up before a fork (not in a child of a threaded process); None
    elsewhere, where the launch outlives a lost connection."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):
        return None


def _launch_process(parent, prctl):
    """In the launch's process before it runs: Ctrl-C raises KeyboardInterrupt (a Ray
    worker ignores and blocks SIGINT, and children keep both, so Python would give them no
    handler and the signal would never come), and PARENT_ENDED comes when the thread that
    started it ends, which lives as long as the launch or its actor (Linux's parent-death
    signal; at once if the actor has already ended)."""
    for signum in (signal.SIGINT, PARENT_ENDED):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, PARENT_ENDED})
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, PARENT_ENDED)
        if os.getppid() != parent:
            os.kill(os.getpid(), PARENT_ENDED)


class Launch:
    """On the head node, in the uploaded working directory: the launch command's process.
    Its output goes to files of its own (unlinked), read from as the client asks, so that
    it can still print when nobody reads: when the actor ends, the launch goes on to stop
    as on Ctrl-C. (Its process is in a session of its own and, for the actor's worker, not
    a child to kill as it exits: RAY_kill_child_processes_on_worker_exit is off for it.)
    `said`: the warnings the client has printed, which the launch does not give again."""

    def __init__(self, command, typed, said):
        import tempfile

        import ray
        from ray._private.ray_constants import RAY_INTERNAL_FLAGS

        # the actor's environment less what Ray gives its workers alone, as a job's supervisor passes it on
        env = {name: value for name, value in os.environ.items() if name not in (*RAY_INTERNAL_FLAGS, KILLS_CHILDREN)}
        env.update({"RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1",
                    TYPED: json.dumps(typed), SAID: json.dumps(said)})
        self._files = {name: tempfile.TemporaryFile() for name in ("stdout", "stderr")}
        self._read = dict.fromkeys(self._files, 0)
        self._returncode = None
        self._ended = threading.Event()
        started = threading.Event()
        threading.Thread(target=self._run, args=([sys.executable, *command[1:]], env, started), daemon=True).start()
        started.wait()
        if self._process is None:
            raise RuntimeError("the launch's process did not start")

    def _run(self, command, env, started):
        try:
            self._process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                                             preexec_fn=lambda parent=os.getpid(), prctl=_prctl():
                                             _launch_process(parent, prctl),
                                             **self._files)
        except BaseException:
            self._process = None
            raise
        finally:
            started.set()
        self._returncode = self._process.wait()
        self._ended.set()

    def read(self, seconds):
        """(stdout, stderr, exit status): the output since the last read, waiting up to
        `seconds` for some; the exit status once the launch has ended and its output is read."""
        for _ in range(max(1, round(seconds / 0.05))):
            ended = self._ended.is_set()
            out, err = (self._new(name) for name in ("stdout", "stderr"))
            if out or err or ended:
                return out, err, (self._returncode if ended else None)
            self._ended.wait(0.05)
        return b"", b"", None

    def _new(self, name):
        fd = self._files[name].fileno()
        data = os.pread(fd, os.fstat(fd).st_size - self._read[name], self._read[name])
        self._read[name] += len(data)
        return data

    def interrupt(self):
        """Ctrl-C, as the terminal gives it to a launch."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)


def run(command, results, address, typed, hint, storage=None):
    """Run the launch `command` (`jobs.launch_command`) on the head node of the cluster at
    `address` (ray://) through Ray Client; print its output; returns its exit status.
    `typed`: the arguments of this command, which the launch gives back in its resume
    command; `hint`: that command, for when the connection is lost."""
    import ray

    from lrsweep.run import jobs
    from lrsweep.run.driver import use_token_if_present

    # Ray Client's log of a connection lost, which the line below says
    for name in ("ray.util.client.dataclient", "ray.util.client.logsclient"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    use_token_if_present()  # without Ray's notice: the launch's own lines say how to sign in
    # Ray's own advice on the timeout; the error below names the address
    warnings.filterwarnings("ignore", message="Ray Client connection timed out")
    for attempt in range(1, SESSION_ATTEMPTS + 1):
        try:
            ray.init(address, runtime_env=jobs.runtime_env(results, storage), log_to_driver=False, logging_level="ERROR")
            break
        except ConnectionAbortedError as e:  # the server answered, but the session it starts for a client did not
            # start (its process, on a busy head: seen on two cores); Ray Client itself does not try again
            if attempt == SESSION_ATTEMPTS:
                print(f"lrsweep: error: {address} did not start a Ray Client session in {SESSION_ATTEMPTS} tries "
                      f"({str(e).splitlines()[0].rstrip(':')}; the head's ray_client_server*.err say why)",
                      file=sys.stderr, flush=True)
                return 1
            time.sleep(2)
        except ConnectionError as e:
            raise LrsweepError(f"Argument `address` gave no Ray Client session ({str(e).splitlines()[0].rstrip(':')}; "
                               f"`ray start --head` serves Ray Client on port 10001, and a server that is up refuses a "
                               f"client without the cluster's token: ~/.ray/auth_token, or RAY_AUTH_TOKEN). Received: "
                               f"address={address!r}") from None
        except RuntimeError as e:  # the server's refusal: another version of Ray or Python there, say
            print(f"lrsweep: error: {address} took no Ray Client session: {str(e).splitlines()[0]}", file=sys.stderr,
                  flush=True)
            return 1
    # Ctrl-C and SIGTERM are the launch's: each is passed on as the next read returns. (As
    # an exception here, a KeyboardInterrupt is lost wherever Ray Client's objects take it.)
    signals = []
    previous = {signum: signal.signal(signum, lambda signum, frame: signals.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _relay(ray, command, typed, address, hint, signals)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        ray.shutdown()


def _relay(ray, command, typed, address, hint, signals):
    """Start the launch on the head node and write its output here until it ends; returns
    its exit status."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    launch = ray.remote(num_cpus=0, max_concurrency=2)(Launch).options(
        scheduling_strategy=head, runtime_env={"env_vars": {KILLS_CHILDREN: "false"}}
    ).remote(command, typed, said())  # the warnings printed here, which it does not give again
    returncode, unread, started = None, False, False
    streams = {sys.stdout: codecs.getincrementaldecoder("utf-8")("replace"),
               sys.stderr: codecs.getincrementaldecoder("utf-8")("replace")}
    while returncode is None:
        try:
            out, err, returncode = ray.get(launch.read.remote(READ_SECONDS))
        except (ray.exceptions.RayError, ConnectionError) as e:
            if not started:  # the actor failed to start (its runtime environment, its constructor)
                cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                print(f"lrsweep: error: the launch did not start on the head node of {address}: {cause}",
                      file=sys.stderr, flush=True)
            else:
                print(f"lrsweep: error: lost the connection to the launch on {address} ({type(e).__name__}); there "
                      f"it stops as on Ctrl-C, and once it has, {hint}", file=sys.stderr, flush=True)
            return 1
        started = True
        for data, stream in ((out, sys.stdout), (err, sys.stderr)):
            _write(stream, streams, data, final=returncode is not None)
        if sys.stdout not in streams and not unread:  # nobody reads this command's output (`| head`): stop
            unread = True
            signals.append(signal.SIGPIPE)
        for _ in range(len(signals)):
            signals.pop()
            launch.interrupt.remote()
    if returncode == -signal.SIGINT:  # a Ctrl-C before the launch could take it: nothing ran
        print("lrsweep: interrupted", file=sys.stderr, flush=True)
        return 130
    if returncode < 0:  # a signal ended it on the head (a kill -9, the machine's memory)
        print(f"lrsweep: error: the launch on {address} was ended by {signal.Signals(-returncode).name}; {hint}",
              file=sys.stderr, flush=True)
        return 128 - returncode
    if unread and returncode in (0, 130):  # its last lines went to the closed stdout; an error's, to stderr
        print(f"lrsweep: {UNREAD}; what ended is stored; {hint}" if returncode else
              f"lrsweep: {ENDED_UNREAD} on the head",
              file=sys.stderr, flush=True)
        return 141  # as SIGPIPE would end it, and a launch here (`cli._Progress`)
    return returncode


def _write(stream, decoders, data, final):
    """Write `data` to `stream` (decoded as UTF-8 across reads), unless it is gone: a
    stream that cannot be written is dropped from `decoders`."""
    if stream not in decoders:
        return
    try:
        text = decoders[stream].decode(data, final=final)
        if text:
            stream.write(text)
            stream.flush()
    except BrokenPipeError:
        del decoders[stream]
        discard(stream)
