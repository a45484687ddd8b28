"""The command line: a table from command name to handler.

Handlers parse arguments and call library functions that know nothing of argv. Bad input
of any kind is one `LrsweepError` line on stderr and exit status 2, answered before Ray or
TensorFlow start (they are imported inside the handlers that need them).
"""

import argparse
import gc
import json
import logging
import os
import re
import shlex
import signal
import sys

from lrsweep.errors import LrsweepError, StoreWriteError, checking
from lrsweep.quiet import discard


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise LrsweepError(message)


def _output(path, folder):
    """`path` as the folder (`folder`) or the file a command writes: bad input, before any
    work, where a file stands in the way; missing folders are made as it writes."""
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(full) and os.path.isdir(full) != folder:
        raise argparse.ArgumentTypeError(f"must be {'a folder' if folder else 'a file'}, and {full} is "
                                         f"{'a file' if folder else 'a folder'}. Received: {path!r}")
    above = full if folder else os.path.dirname(full)
    while not os.path.exists(above):
        if os.path.islink(above):  # os.makedirs would fail on it
            raise argparse.ArgumentTypeError(f"cannot be written: {above} is a link to {os.readlink(above)}, which is "
                                             f"not there. Received: {path!r}")
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        raise argparse.ArgumentTypeError(f"cannot be written: {above} is a file. Received: {path!r}")
    if not os.access(above, os.W_OK | os.X_OK) or (os.path.exists(full) and not os.access(full, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot be written: {full if os.path.exists(full) else above} is not "
                                         f"writable. Received: {path!r}")
    return os.path.expanduser(path)  # --out=~/x: the shell leaves that ~ to the command


def _output_file(path):
    return _output(path, folder=False)


def _outside_store(path, results, flag):
    """Bad input where a command would write `path` into the store's tables or Tune's state
    under the results folder `results`: a picture there breaks `pandas.read_parquet` of the
    table, and a report written over a stored file loses its trials."""
    from lrsweep.results.store import SCHEMAS, is_uri

    if is_uri(results):
        return
    out = os.path.realpath(os.path.expanduser(path))
    for folder in (*SCHEMAS, "tune"):  # the tables, and where Tune keeps its state (`driver.storage_path`)
        inside = os.path.realpath(os.path.join(os.path.expanduser(results), folder))
        if out == inside or out.startswith(inside + os.sep):
            raise LrsweepError(f"Argument `{flag}` must be outside the store's folder {inside}, which lrsweep's "
                               f"readers and pandas read whole. Received: {flag}={path!r}")


def _output_folder(path):
    return _output(path, folder=True)


def _picture_file(path):
    """A file to draw into, in a format its name ends with that matplotlib writes."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if os.path.splitext(path)[1][1:].lower() not in formats:
        raise argparse.ArgumentTypeError(f"must end in a picture format matplotlib writes "
                                         f"({', '.join('.' + k for k in sorted(formats))}). Received: {path!r}")
    return _output_file(path)


def _listening_address(host):
    """An address of this machine that a server can listen on, as the dashboard of a Ray
    that `launch` starts will (Ray's own failure is 50 retries and a traceback, after its
    start)."""
    from lrsweep.run.jobs import not_this_machine

    error = not_this_machine(host)
    if error:
        raise argparse.ArgumentTypeError(f"must be an address of this machine to listen on ({error}). "
                                         f"Received: {host!r}")
    return host


NODE_ADDRESS = ("join this Ray cluster (auto, or the head's host:port) instead of starting one; local: start "
                "one even where RAY_ADDRESS names a cluster")
LAUNCH_ADDRESS = ("join this Ray cluster (auto, or the head's host:port; or ray://HEAD:10001, Ray Client, to run "
                  "the launch on the head node from this terminal) instead of starting one; local: start one even "
                  "where RAY_ADDRESS names a cluster")
JOBS_ADDRESS = ("the cluster's dashboard, http://HOST:8265 (default: RAY_API_SERVER_ADDRESS, else RAY_ADDRESS "
                "if it is an http:// one, else this machine's)")


def _sweep_data_flags(p, help="the sweep file (it defines SWEEP = lrsweep.Sweep(...))"):
    p.add_argument("sweep", metavar="SWEEP.py", help=help)
    p.add_argument("--results", help="results folder or s3:// / gs:// URI (default: the sweep's, results/)")
    p.add_argument("--dataset", help="a registry name, csv:PATH[?target=NAME] or npz:PATH")
    p.add_argument("--data-dir", help="where loaders look for local copies of the dataset")


def _sweep_flags(p, address=LAUNCH_ADDRESS, dashboard=True):
    _sweep_data_flags(p)
    p.add_argument("--num-samples", type=int, help="trials to sample (a search)")
    p.add_argument("--max-epochs", type=int, help="epochs of a trial that is not stopped early")
    p.add_argument("--confirm-seeds", type=int, metavar="K",
                   help="after the search, train each family's best trial again with K seeds, to max_epochs")
    p.add_argument("--seed", type=int, help="the sampler's seed, the trials' and subsample's (default: the sweep's; "
                                            "a launch of the file with another seed draws other trials)")
    p.add_argument("--name", help="the run's name in the store (default: sweep name and start time)")
    p.add_argument("--resume", action="store_true", help="continue the run called --name")
    p.add_argument("--storage", help="where Tune keeps the run's state for --resume (default: the results "
                                     "folder's tune/); on several nodes a folder every node reaches, or a URI")
    p.add_argument("--address", help=address)
    if dashboard:
        p.add_argument("--dashboard-host", type=_listening_address,
                       help="address the dashboard of a Ray the launch starts binds (default 127.0.0.1; a cluster's "
                            "is its `ray start --dashboard-host`)")


def _stored_results(path):
    """A results folder to read from: bad input where it is a file or is not there, which
    would read as an empty store (a URI is taken as it is)."""
    from lrsweep.results import location_error
    from lrsweep.results.store import is_uri

    rule = location_error(path)
    if rule:
        raise argparse.ArgumentTypeError(f"must be {rule}. Received: {path!r}")
    if is_uri(path):
        return path
    folder = os.path.expanduser(path)  # --results=~/x: the shell leaves that ~ to the command
    if not path:
        raise argparse.ArgumentTypeError("must be a results folder. Received: ''")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(
            f"must be a results folder, and {os.path.abspath(folder)} is "
            f"{'a file' if os.path.exists(folder) else 'not there (nothing has been stored there yet)'}. "
            f"Received: {path!r}")
    return folder


def _results_flag(p):
    p.add_argument("--results", default="results", type=_stored_results,
                   help="results folder or URI (default: results/)")


def checked_dataset(sweep):
    """The sweep's `DatasetRef`: the dataset exists as named, has the test split the sweep
    may validate on, and the sweep's model can read it; no TensorFlow."""
    from lrsweep.data import check_dataset
    from lrsweep.data.prepare import no_test_split
    from lrsweep.models import check_model_input

    dataset = check_dataset(sweep.dataset, sweep.data_dir)
    if sweep.validation_split is None and not dataset.test_split:
        raise no_test_split(dataset)
    check_model_input(sweep.model, dataset)
    return dataset


def load_checked_sweep(args, joins=True, head=None, download=False, warn=True):
    """(sweep, its `DatasetRef`, its data): the sweep file with the command-line flags
    applied, every input checked, the data read as launch reads it (what it would refuse in
    the data, a cell that is not a number, one class, too few rows, refused here; None where
    it would be downloaded, unless `download`); no Ray, no TensorFlow (but for a download:
    Keras, and Ray's count of this machine's CPUs and GPUs first, for a launch that starts
    its own Ray: `check_local_fit`). Warnings come once every check has passed: bad input is one line
    (`errors.checking`; `warn=False`: left to the launch this command hands the input on
    to). `joins`: `--address` is a Ray cluster to join (not submit's dashboard). `head`: the
    address of the cluster whose head node holds the run (submit's; a ray:// one), whose
    store and Tune state are checked here only if it is this machine."""
    with checking(say=warn):
        return _checked_sweep(args, joins, head, download)


def _checked_sweep(args, joins, head, download):
    from lrsweep.run.client import client_address
    from lrsweep.run.driver import check_address, check_launch, joins_cluster
    from lrsweep.run.jobs import on_this_machine

    if joins:
        check_address(args.address, client=True)
        head = client_address(args.address)
        joins = not head
        if getattr(args, "dashboard_host", None) and joins_cluster(args.address):
            raise LrsweepError(f"Argument `dashboard_host` is where the dashboard of a Ray the launch starts listens; "
                               f"the cluster it joins has its own (`ray start --dashboard-host`). Received: "
                               f"dashboard_host={args.dashboard_host!r} with address="
                               f"{args.address or os.environ.get('RAY_ADDRESS')!r}")
    from lrsweep.sweep.spec import load_sweep, warn_of_mode

    flags = {"dataset": args.dataset, "num_samples": args.num_samples, "max_epochs": args.max_epochs,
             "confirm_seeds": args.confirm_seeds, "seed": args.seed}
    sweep = load_sweep(args.sweep).with_overrides(results=args.results, data_dir=args.data_dir, storage=args.storage,
                                                  **flags)
    here = joins or on_this_machine(head)
    check_launch(sweep, args.name, args.resume, here=here)
    folder, taken = None, {}
    if args.resume and here:  # a run on a remote head: its launch there does this
        from lrsweep.run.driver import storage_path
        from lrsweep.run.resume import check_not_running, resumed_sweep

        folder = f"{storage_path(sweep)}/{args.name}"
        check_not_running(folder, args.name)  # before anything else about the run, and before its data is read
        sweep, taken = resumed_sweep(sweep, folder, args.name,
                                     {flag for flag, value in flags.items() if value is not None})
    from lrsweep.run.driver import check_local_fit, sweep_data

    warn_of_mode(sweep)  # held until every check has passed (`checking`)
    dataset = checked_dataset(sweep)
    data = sweep_data(sweep, offline=True)
    if data is None and download:  # minutes for a large dataset: not for trials the launch's own Ray cannot hold
        if not joins_cluster(args.address):
            check_local_fit(sweep)
        data = sweep_data(sweep)
    if folder and data is not None:
        from lrsweep.run.resume import check_data

        check_data(folder, args.name, sweep, data)
    if taken and joins:  # once every check has passed (bad input is one line); submit's job says it
        print(f"resuming {args.name} as it was launched: "
              f"{', '.join(f'{field}={value!r}' for field, value in taken.items())} (not the sweep file's)", flush=True)
    return sweep, dataset, data


def cmd_validate(args):
    from lrsweep.sweep.describe import describe

    print(describe(*load_checked_sweep(args)))


def cmd_launch(args):
    from lrsweep.run.client import ENDED_UNREAD, UNREAD, client_address

    through = client_address(args.address)
    if through:
        return _launch_through_client(args, through)
    sweep, _, *data = load_checked_sweep(args, download=True)  # [data], which launch takes out
    from lrsweep.results.rank import format_ranking, rank
    from lrsweep.results.store import partition, read_frame
    from lrsweep.run.driver import launch, run_name, stop_ray, storage_path, tune_state_exists

    name = run_name(sweep, args.name)
    elsewhere = "" if sweep.results == "results" else f" --results {shlex.quote(sweep.results)}"
    progress = _Progress()
    try:
        name, dataset_name, status = launch(sweep, name=name, address=args.address, resume=args.resume, data=data,
                                            dashboard_host=args.dashboard_host or "127.0.0.1", print_fn=progress,
                                            finish_hint=_finish_hint(args, name))
        trials = read_frame(sweep.results, "trials", dataset_name)
        trials = trials[trials["sweep"] == name]
        print()  # (the store may hold other runs: "no trials in the store" said it had none)
        print(format_ranking(rank(trials)) if len(trials) else f"no trial of {name} has ended: nothing to rank yet")
        where = partition(sweep.results, "{trials,epochs}", dataset_name, name)
        print(f"\nstored under {where}; all sweeps on {dataset_name}: lrsweep rank --dataset "
              f"{shlex.quote(dataset_name)}{elsewhere}", flush=True)
    except KeyboardInterrupt:  # a second Ctrl-C, which Tune's first offers to skip its saving and cleanup; or one
        # before Tune ran (Ray starting)
        _ignore_ctrl_c()  # the launch has stopped: another (one held down) would leave a Ray it started running
        # and cut its last line short
        resumable = tune_state_exists(f"{storage_path(sweep)}/{name}")
        try:
            stop_ray()  # before the last line, which Ray's late log lines would otherwise follow
        finally:
            stopped = UNREAD if progress.gone else "interrupted"
            print(f"lrsweep: {stopped}{'; what ended is stored; ' + _finish_hint(args, name) if resumable else ''}",
                  file=sys.stderr, flush=True)
        return 141 if progress.gone else 130
    except StoreWriteError as e:  # the run failed, not the input: exit 1
        try:
            stop_ray()
        finally:
            print(f"lrsweep: error: {e}; the run stopped, and once the store can be written again "
                  f"{_finish_hint(args, name)}", file=sys.stderr, flush=True)
        return 1
    stopped = status == 130
    try:
        stop_ray()  # now, not at exit, where Ray first sleeps half a second for late log lines; before the last line
    except KeyboardInterrupt:  # the run had ended (or stopped) and is stored: Ray stops at exit
        _ignore_ctrl_c()
        print("lrsweep: interrupted as Ray stopped; it stops as this command exits", file=sys.stderr, flush=True)
        status = 130
    if progress.gone:  # the output is gone, and with it the ranking: the line that matters goes to stderr
        print(f"lrsweep: {UNREAD}; what ended is stored; {_finish_hint(args, name)}" if stopped else
              f"lrsweep: {ENDED_UNREAD}: lrsweep rank --dataset {shlex.quote(dataset_name)}{elsewhere}",
              file=sys.stderr, flush=True)
        return 141
    if stopped:
        print(f"interrupted before every trial ran; {_finish_hint(args, name)}", flush=True)
    return status


class _Progress:
    """Where launch's progress lines go: the standard output, until its reader stops reading
    (`launch | head`). Then the launch stops as on Ctrl-C (Tune saves its state, what ended
    is stored), as SIGPIPE ends a command Python does not shield from it, and exits 141."""

    def __init__(self):
        self.gone = False

    def __call__(self, line):
        if self.gone:
            return
        try:
            print(line, flush=True)
        except BrokenPipeError:
            self.gone = True
            discard(sys.stdout)
            # Tune's notice of the signal speaks of a Ctrl-C, and offers another to skip its last save
            logging.getLogger("ray.tune.tune").addFilter(_not_a_ctrl_c)
            signal.raise_signal(signal.SIGINT)


def _not_a_ctrl_c(record):
    return not record.getMessage().startswith("Stop signal received")


def _ignore_ctrl_c():
    """From here on the command ends as it is: a Ctrl-C (SIGINT) no longer changes its output
    or its exit status."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _launch_through_client(args, address):
    from lrsweep.run import client, jobs
    from lrsweep.run.driver import check_answers, run_name

    sweep, _, _ = load_checked_sweep(args)
    check_answers(address)
    args.name = run_name(sweep, args.name)  # named here: the run can be resumed whatever becomes of this command
    command, results = jobs.launch_command(args.sweep, sweep, args)
    print(f"launching on the head node of {address} through Ray Client: {shlex.join(command)}\n"
          f"results: {results} (on the head node); Ctrl-C stops the launch as it would stop one here\n", flush=True)
    return client.run(command, results, address, args.argv, _finish_hint(args, args.name), sweep.storage)


def _finish_hint(args, name):
    """The user's own launch command, made to resume run `name` (through Ray Client, the
    command typed on the client's machine)."""
    from lrsweep.run.client import TYPED

    typed = json.loads(os.environ[TYPED]) if TYPED in os.environ else args.argv
    again = [a for a in typed if a != "--resume"]
    if "--name" not in again and not any(a.startswith("--name=") for a in again):
        again += ["--name", name]
    return f"this finishes it: lrsweep {shlex.join(again)} --resume"


def cmd_submit(args):
    from requests import RequestException

    from lrsweep.run import jobs

    address = jobs.jobs_address(args.address)
    # a job followed gives the warnings in its output, which follows
    sweep, _, _ = load_checked_sweep(args, joins=False, head=address, warn=args.no_wait)
    command, results = jobs.launch_command(args.sweep, sweep, args)
    client = jobs.jobs_client(address)
    try:
        job = jobs.submit(command, results, client, sweep.storage, typed=args.argv)
    except (RuntimeError, RequestException) as e:  # the cluster's answer (or its dropped connection), not bad input
        print(f"lrsweep: error: {address} did not take the job: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    follow, status, stop = jobs.reach_again(job, address)
    try:  # from here on the job runs on the cluster, whatever becomes of this command's output
        print(f"submitted {job} to {address}: {shlex.join(command)}\n"
              f"results: {results} (on the cluster's head node)", flush=True)
        if args.no_wait:
            print(f"follow it: {follow} (or the dashboard's Jobs view); {status}", flush=True)
            return 0
        print(f"its output follows until it ends (Ctrl-C stops following, not the job: {follow} takes it up "
              f"again)\n", flush=True)
        return jobs.logs(job, address, follow=True, client=client)
    except KeyboardInterrupt:
        print(f"\nstopped following {job}, which goes on: {follow}; {status}; {stop} stops it", flush=True)
        return 130
    except BrokenPipeError:  # `submit | head`: the reader has what it wanted, and the job goes on
        discard(sys.stdout)
        print(f"lrsweep: {f'submitted {job}' if args.no_wait else f'stopped following {job}'}, as the reader of "
              f"its output stopped reading; the job goes on: {follow}; {status}; {stop} stops it", file=sys.stderr)
        return 141
    except Exception as e:  # noqa: BLE001  (the dashboard's stream broke; the job is not this command's to end)
        print(f"lrsweep: error: lost the output of {job}, which goes on ({str(e).splitlines()[0] if str(e) else e!r}): "
              f"{follow}; {status}", file=sys.stderr)
        return 1


def cmd_status(args):
    from lrsweep.run import jobs

    address = jobs.jobs_address(args.address)

    def status():
        line, status = jobs.status(args.job, address)
        print(line)
        return status

    return _asking_dashboard(args, address, status)


def cmd_logs(args):
    from lrsweep.run import jobs

    address = jobs.jobs_address(args.address)
    return _asking_dashboard(args, address, lambda: jobs.logs(args.job, address, args.follow))


def _asking_dashboard(args, address, ask):
    """`ask()`, which asks the dashboard at `address` about job `args.job`; where the
    dashboard answers with an error (Ray's client raises RuntimeError: a 500 while its job
    module restarts) or stops answering (requests' errors, after `logs --follow` has asked
    again for a while), one line and exit 1: the cluster's trouble, not bad input, and the
    job itself goes on."""
    from requests import RequestException

    from lrsweep.run.jobs import reach_again

    try:
        return ask()
    except (RuntimeError, RequestException) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        again = reach_again(args.job, address)[1]
        print(f"lrsweep: error: the dashboard at {address} did not answer about {args.job} ({reason}); the job is "
              f"not stopped by this: ask again with {again}", file=sys.stderr)
        return 1


PREVIEW_EPOCHS = 10_000_000  # `schedule --epochs`: 80 MB of rates, computed in one call


def _schedule_params(family, pairs):
    params, given = {}, {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LrsweepError(f"Schedule parameters are written name=value. Received: {pair!r}")
        if key in params:
            raise LrsweepError(f"Schedule parameter `{key}` is given twice. Received: {given[key]!r} and {pair!r}")
        params[key], given[key] = family.param(key).parse(value), pair
    return params


def cmd_schedule(args):
    from lrsweep.schedules.registry import check_schedule, count, family

    fam = family(args.family)
    params = _schedule_params(fam, args.params)
    if not 1 <= args.epochs <= PREVIEW_EPOCHS:
        raise LrsweepError(f"Argument `epochs` must be an integer from 1 to {PREVIEW_EPOCHS} (a line per epoch). "
                           f"Received: epochs={args.epochs}")
    if args.steps_per_epoch is not None:
        count("steps_per_epoch").check(args.steps_per_epoch)  # a schedule parameter's own bounds
    full = check_schedule(args.family, params, args.epochs, args.granularity)
    moves_per_step = args.granularity == "step" and args.family not in ("constant", "plateau")  # fixed in an epoch
    if args.steps_per_epoch is None and (moves_per_step or full.get("decay_unit") == "step"):
        raise LrsweepError("Argument `steps_per_epoch` is needed when the rate changes every step. "
                           "Received: steps_per_epoch=None")
    from lrsweep.quiet import import_tensorflow
    from lrsweep.schedules.preview import epoch_rates

    import_tensorflow()

    rates = epoch_rates(args.family, params, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch or 1,
                        granularity=args.granularity)
    if args.csv:
        print("epoch,lr")
        print("\n".join(f"{e},{lr:.7g}" for e, lr in enumerate(rates, 1)))
    else:
        print("epoch  lr")
        print("\n".join(f"{e:>5}  {lr:.6g}" for e, lr in enumerate(rates, 1)))
    if args.plot:
        from lrsweep.results.plots import plot_rates

        label = f"{args.family} " + ", ".join(f"{k}={v}" for k, v in params.items())
        plot_rates({label: rates}, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)


def cmd_rank(args):
    from lrsweep.results.rank import format_ranking, rank, ranked_column
    from lrsweep.results.store import dataset_trials, has_table, read_frame, sweep_trials

    if args.metric is not None:
        ranked_column(args.metric)  # bad input, whatever the store holds (even nothing)
    with checking():  # a warning (a foreign file) only once the input is taken: bad input is one line
        # a dataset or run the store does not hold is bad input (a typo); an empty store is not
        if args.sweep is not None:
            trials = sweep_trials(args.results, args.sweep, args.dataset)
        else:
            trials = (read_frame(args.results, "trials") if args.dataset is None
                      else dataset_trials(args.results, args.dataset))
    if trials.empty and not has_table(args.results, "trials"):  # a folder that is no store, or a store not used yet
        launched = has_table(args.results, "tune")  # a launch stopped before any trial ended
        print(f"no trials in the store: no trial stored in {args.results} has ended yet" if launched
              else f"no trials in the store: {args.results} holds no trials/ folder (a store is the folder a launch's "
                   f"--results named: trials/, epochs/, tune/)")
        return
    print(format_ranking(rank(trials, args.metric)))


def cmd_query(args):
    from lrsweep.results.query import format_frame, query

    with checking():  # a warning (a foreign file) only once the input is taken: bad SQL is one line
        frame = query(args.results, args.sql)
    print(format_frame(frame, args.format))


def cmd_best(args):
    from lrsweep.results.best import best_config, python_snippet

    with checking():  # a warning (a foreign file) only once the input is taken: bad input is one line
        config = best_config(args.results, args.dataset, trial_id=args.trial)
    print(python_snippet(config) if args.python else json.dumps(config, indent=2))


def cmd_fit_schedule(args):
    from lrsweep.results import fitting

    if args.confirm:  # bad input first, before TensorFlow and Ray
        from lrsweep.run.driver import check_address

        check_address(args.address)
        if args.format == "json":
            raise LrsweepError("Argument `format` must be 'table' with --confirm (it goes on to train and compare). "
                               "Received: format='json'")
    with checking():  # a warning (a foreign file) only once the input is taken: bad input is one line
        row, rates = fitting.rate_trace(args.results, args.dataset, args.trial)
    if args.confirm:
        own = {"family": row["family"], "params": json.loads(row["params"])}
        sweep = fitting.confirmation_sweep(row, own, args.confirm_seeds, args.results)
        from lrsweep.run.driver import check_launch

        checked_dataset(sweep)
        check_launch(sweep, None, False)
    fits = fitting.fit_trace(row, rates)
    print(fitting.fits_json(row, rates, fits) if args.format == "json" else fitting.format_fits(row, rates, fits),
          flush=True)
    if not args.confirm:
        return 0
    from lrsweep.run.driver import launch, stop_ray

    sweep = fitting.confirmation_sweep(row, fits[0], args.confirm_seeds, args.results)
    print(f"\ntraining the closest fit, {row['optimizer']}/{fits[0]['family']}, as trial {row['trial_id']} trained, "
          f"with its sweep's seed {sweep.seed} and {args.confirm_seeds} more", flush=True)
    progress = _Progress()
    try:
        name, dataset, status = launch(sweep, address=args.address, print_fn=progress)
    except KeyboardInterrupt:  # a Ctrl-C, or the reader gone, outside Tune (Ray starting)
        if not progress.gone:
            raise
        name = None
    if progress.gone:
        stop_ray()
        print(f"lrsweep: the confirmation run stopped, as the reader of its output stopped reading"
              f"{f'; what ended is stored (sweep {name})' if name else ''}", file=sys.stderr, flush=True)
        return 141
    print()
    print(fitting.compare_with_trial(args.results, dataset, row, fits[0], name), flush=True)
    stop_ray()
    return status


def cmd_find_lr(args):
    from lrsweep.sweep.spec import load_sweep

    sweep = load_sweep(args.sweep).with_overrides(results=args.results, dataset=args.dataset, data_dir=args.data_dir)
    checked_dataset(sweep)
    from lrsweep.run.driver import check_results

    check_results(sweep, storage=False)  # the results folder alone: no Tune, no `storage`
    if args.plot:
        _outside_store(args.plot, sweep.results, "plot")
    from lrsweep.run.find_lr import find_lr

    found = find_lr(sweep, print_fn=lambda line: print(line, flush=True))
    if args.plot and not any(rows for rows, _, _ in found.values()):
        print(f"no curve to draw: {args.plot} is not written")
    elif args.plot:
        from lrsweep.results.plots import plot_lr_range

        plot_lr_range(found, args.plot)
        print(f"wrote {args.plot}")


def _add_find_lr(p):
    _sweep_data_flags(p, help="the sweep file: its dataset, model and optimizers")
    p.add_argument("--plot", metavar="F.png", type=_picture_file,
                   help="draw loss against rate into this picture (.png, .svg, .pdf, ...)")


def cmd_plot(args):
    from lrsweep.results.plots import sweep_pictures

    _outside_store(args.out, args.results, "out")
    with checking():  # a warning (a foreign file) only once the input is taken: bad input is one line
        paths = sweep_pictures(args.results, args.dataset, args.out)
    for path in paths:
        print(path)


def cmd_report(args):
    from lrsweep.results.plots import sweep_report

    _outside_store(args.out, args.results, "out")
    with checking():  # a warning (a foreign file) only once the input is taken: bad input is one line
        page = sweep_report(args.results, args.dataset, args.out)
    print(page)


def _add_plot(p):
    p.add_argument("--dataset", required=True)
    _results_flag(p)
    p.add_argument("--out", required=True, metavar="DIR", type=_output_folder,
                   help="folder for rates.png, curves.png, ranking.png")


def _add_report(p):
    p.add_argument("--dataset", required=True)
    _results_flag(p)
    p.add_argument("--out", required=True, metavar="FILE.html", type=_output_file,
                   help="the page to write (pictures embedded)")


def _add_validate(p):
    _sweep_flags(p)


def _add_submit(p):
    _sweep_flags(p, address=JOBS_ADDRESS, dashboard=False)
    p.add_argument("--no-wait", action="store_true",
                   help="return once the job is submitted instead of following its output (as `ray job submit`)")


def _job_id(value):
    """A Ray job's submission id (raysubmit_...) or id: it becomes part of the dashboard's URL."""
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", value):  # not . or ..: a URL's dot segments
        raise argparse.ArgumentTypeError(f"must be a job's submission id, as `submit` printed it (raysubmit_...). "
                                         f"Received: {value!r}")
    return value


def _add_job(p):
    p.add_argument("job", metavar="JOB", type=_job_id, help="the job's submission id, as `submit` printed it")
    p.add_argument("--address", help=JOBS_ADDRESS)


def _add_logs(p):
    _add_job(p)
    p.add_argument("--follow", action="store_true", help="keep printing until the job ends; exit 1 if it failed")


def _add_schedule(p):
    from lrsweep.schedules.registry import FAMILIES

    p.add_argument("family", metavar="FAMILY", help=", ".join(FAMILIES))
    p.add_argument("params", nargs="*", metavar="k=v", help="the family's parameters, e.g. initial_lr=0.1")
    p.add_argument("--epochs", type=int, required=True, help="epochs to show (E of polynomial, cosine, one_cycle)")
    p.add_argument("--steps-per-epoch", type=int, help="optimizer steps per epoch (for per-step rates)")
    p.add_argument("--granularity", choices=("epoch", "step"), default="epoch")
    p.add_argument("--csv", action="store_true", help="print `epoch,lr` rows")
    p.add_argument("--plot", metavar="F.png", type=_picture_file,
                   help="draw the curve into this picture (.png, .svg, .pdf, ...)")


def _add_rank(p):
    _results_flag(p)
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--sweep", metavar="NAME", help="only this run (as its launch ranked it), not every sweep's")
    p.add_argument("--metric", help="rank by this metric (default: the sweep's, final epoch)")


def _add_query(p):
    p.add_argument("sql", metavar="SQL", help="a query over the tables trials, epochs and lr_range")
    _results_flag(p)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")


def _add_best(p):
    p.add_argument("--dataset", required=True)
    _results_flag(p)
    p.add_argument("--trial", help="this trial instead of the best one")
    p.add_argument("--python", action="store_true", help="print a Keras snippet that runs without lrsweep")


def _add_fit_schedule(p):
    p.add_argument("--dataset", required=True)
    _results_flag(p)
    p.add_argument("--trial", help="this trial instead of the best one")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--confirm", action="store_true",
                   help="train the closest fit again as the trial trained, with its sweep's seed and "
                        "--confirm-seeds more, and compare it with the trial's own schedule")
    p.add_argument("--confirm-seeds", type=int, default=5, metavar="K", help="seeds beyond the sweep's (default 5)")
    p.add_argument("--address", help=NODE_ADDRESS)


COMMANDS = {
    "validate": (_add_validate, cmd_validate, "check a sweep file and show what it would run (no Ray, no TensorFlow)"),
    "launch": (_add_validate, cmd_launch, "run a sweep and print its ranking"),
    "submit": (_add_submit, cmd_submit,
               "run a sweep as a Ray job on a running cluster and follow its output (`--no-wait`: return at once)"),
    "status": (_add_job, cmd_status, "the state of a submitted sweep"),
    "logs": (_add_logs, cmd_logs, "the output of a submitted sweep"),
    "schedule": (_add_schedule, cmd_schedule, "preview one schedule: the rate in effect during each epoch"),
    "rank": (_add_rank, cmd_rank, "rank schedule families per dataset"),
    "query": (_add_query, cmd_query, "SQL over the tables trials, epochs and lr_range"),
    "best": (_add_best, cmd_best, "the winning schedule as Keras JSON, or a Python snippet"),
    "fit-schedule": (_add_fit_schedule, cmd_fit_schedule,
                     "fit every family but plateau to a trial's rate trace, closest first"),
    "find-lr": (_add_find_lr, cmd_find_lr, "learning-rate range test per optimizer: rows stored, two rates suggested"),
    "plot": (_add_plot, cmd_plot, "pictures of a dataset's sweeps: rate curves, learning curves, the ranking"),
    "report": (_add_report, cmd_report, "one HTML page: the ranking and the pictures"),
}


def parser():
    top = _Parser(prog="lrsweep", description="Find the best learning-rate schedule for a Keras model.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add, handler, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        add(sub)
        sub.set_defaults(handler=handler)
    return top


def main(argv=None):
    """The command in `argv` (by default the program's own arguments); returns its exit
    status. As the program, once that status is known a Ctrl-C no longer changes it: Python
    gives SIGINT back to the system as it exits, and a launch's second Ctrl-C coming then
    (Tune's first ended the run quickly) killed it with the signal instead of exit 130. Nor
    does Python's last garbage collection walk the heap as it exits: with Ray, Tune, pandas
    and pyarrow imported that took 0.3-0.5 s of every command, after its output."""
    try:
        return _command(argv)
    finally:
        if argv is None:
            _ignore_ctrl_c()
            gc.freeze()  # what is frozen is left to the process's end, as all of it is then


def _command(argv):
    # TensorFlow's start-up chatter is not the program's output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        args = parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        status = args.handler(args) or 0
        sys.stdout.flush()  # here, where a reader gone is caught below, not as Python exits
        return status
    except BrokenPipeError:  # the reader of its output stopped reading (| head): what it read is what it wanted
        discard(sys.stdout)
        return 141  # as SIGPIPE would end it (128 + 13), which Python ignores
    except LrsweepError as e:
        print(f"lrsweep: error: {e}", file=sys.stderr)
        return 2
    except StoreWriteError as e:  # fit-schedule --confirm's launch: the run failed, not the input
        print(f"lrsweep: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lrsweep: interrupted", file=sys.stderr)
        return 130
