"""`launch --address ray://HOST:PORT`: the launch runs on the cluster's head node through
Ray Client, attached to this command.

Ray Tune runs an experiment on the head node when its driver connects through Ray Client;
lrsweep runs the whole launch there, the store's writes and the ranking with it. The
current folder is uploaded as its working directory (as `submit` uploads it), and
`Launch`, an actor on the head node, runs the launch command in it as a Ray job's
supervisor runs its entrypoint: RAY_ADDRESS the cluster's, output unbuffered. This command
prints the launch's output as it comes, passes Ctrl-C (and SIGTERM) on to it, which then
stops as a launch on this machine stops, and exits with its exit status. The results and
Tune's state are written on the head node, at the paths this folder gives them.

If this command's connection ends (the machine sleeps, the network drops), Ray Client
ends its session: the actor ends, and the launch, whose death signal is SIGTERM, stops as
on Ctrl-C, resumable with `--resume`.
"""

import codecs
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings

from lrsweep.errors import LrsweepError

# How long one `read` waits on the head for output before it answers with none.
READ_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1
# The launch's environment variable holding the arguments its resume command gives back (JSON).
TYPED = "LRSWEEP_TYPED_ARGUMENTS"


def client_address(address):
    """The Ray Client address (ray://) the launch is to run through, as ray.init takes it:
    `--address`, or RAY_ADDRESS where `--address` is not given or is auto; else None."""
    from_env = os.environ.get("RAY_ADDRESS", "")
    if address and address.startswith("ray://"):
        return address
    if address in (None, "", "auto") and from_env.startswith("ray://"):
        return from_env
    return None


def _launch_process():
    """In the launch's process before it runs: Ctrl-C raises KeyboardInterrupt (a Ray
    worker ignores and blocks SIGINT, and children keep both, so Python would give them no
    handler and the signal would never come), and SIGTERM comes when the thread that started it ends, which
    lives as long as the launch or its actor (Linux's parent-death signal)."""
    import ctypes

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (AttributeError, OSError):  # not Linux: the launch outlives a lost connection
        pass


class Launch:
    """On the head node, in the uploaded working directory: the launch command's process
    and its output, kept until the client reads it."""

    def __init__(self, command, typed):
        import ray

        env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1",
               TYPED: json.dumps(typed)}
        self._output = {"stdout": [], "stderr": []}
        self._returncode = None
        self._changed = threading.Condition()
        started = threading.Event()
        threading.Thread(target=self._run, args=([sys.executable, *command[1:]], env, started), daemon=True).start()
        started.wait()

    def _run(self, command, env, started):
        self._process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         start_new_session=True, preexec_fn=_launch_process)
        started.set()
        pumps = [threading.Thread(target=self._pump, args=(name,), daemon=True) for name in self._output]
        for pump in pumps:
            pump.start()
        returncode = self._process.wait()
        for pump in pumps:
            pump.join()
        with self._changed:
            self._returncode = returncode
            self._changed.notify_all()

    def _pump(self, name):
        stream = getattr(self._process, name)
        while chunk := os.read(stream.fileno(), 65536):
            with self._changed:
                self._output[name].append(chunk)
                self._changed.notify_all()

    def read(self, seconds):
        """(stdout, stderr, exit status): the output since the last read, waiting up to
        `seconds` for some; the exit status once the launch has ended and its output is read."""
        with self._changed:
            self._changed.wait_for(lambda: any(self._output.values()) or self._returncode is not None, seconds)
            out, err = (b"".join(self._output[name]) for name in ("stdout", "stderr"))
            for chunks in self._output.values():
                chunks.clear()
            return out, err, self._returncode

    def interrupt(self):
        """Ctrl-C, as the terminal gives it to a launch."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)


def run(command, results, address, typed):
    """Run the launch `command` (`jobs.launch_command`) on the head node of the cluster at
    `address` (ray://) through Ray Client; print its output; returns its exit status.
    `typed`: the arguments of this command, which the launch gives back in its resume
    command."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from lrsweep.run import jobs
    from lrsweep.run.driver import use_token_if_present

    # Ray's notice that tokens are on, as it turns them on for a client; the launch's own lines say how to sign in
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    use_token_if_present()
    # Ray's own advice on the timeout; the error below names the address
    warnings.filterwarnings("ignore", message="Ray Client connection timed out")
    try:
        ray.init(address, runtime_env=jobs.runtime_env(results), log_to_driver=False, logging_level="ERROR")
    except ConnectionError as e:
        raise LrsweepError(f"Argument `address` reaches no Ray Client server ({str(e).splitlines()[0]}; `ray start "
                           f"--head` serves one on port 10001). Received: address={address!r}") from None
    head = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    launch = ray.remote(num_cpus=0, max_concurrency=2)(Launch).options(scheduling_strategy=head).remote(
        command, typed)
    # Ctrl-C and SIGTERM are the launch's: each is passed on as the next read returns. (As
    # an exception here, a KeyboardInterrupt is lost wherever Ray Client's objects take it.)
    signals = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: signals.append(signum))
    returncode = None
    decoders = {stream: codecs.getincrementaldecoder("utf-8")("replace") for stream in (sys.stdout, sys.stderr)}
    while returncode is None:
        try:
            out, err, returncode = ray.get(launch.read.remote(READ_SECONDS))
        except (ray.exceptions.RayError, ConnectionError) as e:
            print(f"lrsweep: error: lost the launch on {address} ({str(e).splitlines()[0]}); it stops as on Ctrl-C, "
                  f"and --resume finishes it", file=sys.stderr, flush=True)
            return 1
        for data, stream in ((out, sys.stdout), (err, sys.stderr)):
            if data:
                stream.write(decoders[stream].decode(data))
                stream.flush()
        for _ in range(len(signals)):
            signals.pop()
            launch.interrupt.remote()
    ray.shutdown()
    return returncode
