"""The results store on real Parquet files: one schema for every file, the hive layout,
atomic writes confined to one sweep, the latest record of a trial, and reading past
corrupt or foreign files without touching them."""

import glob
import os

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from lrsweep import FAMILIES
from lrsweep.results.query import query
from lrsweep.results.store import (LATER_COLUMNS, SCHEMAS, check_writable, dataset_trials, read_frame, read_table,
                                   sweep_exists, sweep_trials, write_rows)

# One trial of four families, each setting only its own parameter columns.
TRIALS = [
    {"trial_id": "t1", "family": "step", "optimizer": "sgd", "initial_lr": 0.1, "drop": 0.5, "epochs_drop": 10},
    {"trial_id": "t2", "family": "cyclical", "optimizer": "sgd", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2,
     "mode": "triangular2"},
    {"trial_id": "t3", "family": "time_based", "optimizer": "sgd", "initial_lr": 0.1, "decay": 0.01,
     "decay_unit": "step"},
    {"trial_id": "t4", "family": "constant", "optimizer": "adam", "initial_lr": 0.001},
]
STRING_PARAMS = {p.name for f in FAMILIES.values() for p in f.params if p.kind is str}
NUMERIC_PARAMS = {p.name for f in FAMILIES.values() for p in f.params if p.kind is not str}


def files_under(folder):
    """Every file below `folder`, hidden ones included, with its bytes."""
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                found[path] = f.read()
    return found


@pytest.fixture
def mixed_families(tmp_path):
    for row in TRIALS:
        write_rows(str(tmp_path), "trials", "digits", "s1", [row])
    return tmp_path


def test_pandas_reads_files_of_different_families_as_one_table(mixed_families):
    frame = pd.read_parquet(mixed_families / "trials")
    assert set(SCHEMAS["trials"].names) | {"dataset", "sweep"} <= set(frame.columns)
    assert len(frame) == 4
    for name in NUMERIC_PARAMS:
        assert frame[name].dtype == "float64", name
    for name in STRING_PARAMS:
        assert pd.api.types.is_string_dtype(frame[name]), name
    by_id = frame.set_index("trial_id")
    assert by_id.loc["t2", "mode"] == "triangular2" and by_id.loc["t3", "decay_unit"] == "step"
    assert by_id.loc["t1", "epochs_drop"] == 10.0 and pd.isna(by_id.loc["t1", "base_lr"])
    assert set(frame["dataset"].astype(str)) == {"digits"} and set(frame["sweep"].astype(str)) == {"s1"}


def test_pyarrow_dataset_reads_files_of_different_families_as_one_table(mixed_families):
    table = ds.dataset(mixed_families / "trials", partitioning="hive").to_table()
    assert table.num_rows == 4
    for name in NUMERIC_PARAMS:
        assert table.schema.field(name).type == pa.float64(), name
    for name in STRING_PARAMS:
        assert table.schema.field(name).type == pa.string(), name
    assert set(table["dataset"].to_pylist()) == {"digits"} and set(table["sweep"].to_pylist()) == {"s1"}


def test_read_frame_gives_every_column_with_partition_columns(mixed_families):
    frame = read_frame(str(mixed_families), "trials")
    assert list(frame.columns) == SCHEMAS["trials"].names + ["dataset", "sweep"]
    assert sorted(frame["trial_id"]) == ["t1", "t2", "t3", "t4"]
    assert set(frame["dataset"]) == {"digits"} and set(frame["sweep"]) == {"s1"}


def test_files_sit_in_the_hive_layout_with_no_temporary_file_left(tmp_path):
    write_rows(str(tmp_path), "trials", "digits", "s1", TRIALS[:2])
    write_rows(str(tmp_path), "trials", "ionosphere", "s2", TRIALS[2:])
    write_rows(str(tmp_path), "epochs", "digits", "s1", [{"trial_id": "t1", "epoch": 1, "lr": 0.1}])
    found = sorted(os.path.relpath(p, tmp_path) for p in files_under(tmp_path))
    assert len(found) == 3
    assert glob.glob("trials/dataset=digits/sweep=s1/part-*.parquet", root_dir=tmp_path) == [found[1]]
    assert glob.glob("trials/dataset=ionosphere/sweep=s2/part-*.parquet", root_dir=tmp_path) == [found[2]]
    assert glob.glob("epochs/dataset=digits/sweep=s1/part-*.parquet", root_dir=tmp_path) == [found[0]]


@pytest.mark.parametrize("name", ["lr=0.1", "q1%20sales", "q1 sales"])
def test_a_dataset_named_by_any_file_stem_reads_back_by_that_name_beside_others(tmp_path, name):
    """A `csv:` dataset is named by its file's stem, which may hold what a Hive folder name
    means otherwise (`=`, `%20`): every reader gives the name back as written, finds the
    dataset by it, and reads the other datasets' rows beside it (DuckDB refused the whole
    store over a second `=`)."""
    write_rows(str(tmp_path), "trials", name, "s1", TRIALS[:1])
    write_rows(str(tmp_path), "trials", "digits", "s1", TRIALS[1:])
    assert sorted(set(read_frame(str(tmp_path), "trials")["dataset"])) == sorted(["digits", name])
    assert read_frame(str(tmp_path), "trials", dataset=name)["trial_id"].tolist() == ["t1"]
    assert dataset_trials(str(tmp_path), name)["trial_id"].tolist() == ["t1"]
    assert sweep_trials(str(tmp_path), "s1", dataset=name)["trial_id"].tolist() == ["t1"]
    counted = query(str(tmp_path), "SELECT dataset, count(*) AS n FROM trials GROUP BY dataset ORDER BY n")
    assert counted.values.tolist() == [[name, 1], ["digits", 3]]


def test_a_folder_named_before_names_were_encoded_still_answers_queries(tmp_path):
    """lrsweep wrote `dataset=lr=0.1` before it encoded folder names: DuckDB refuses a
    second `=` in a partition (and so every query over the store); pyarrow reads it."""
    write_rows(str(tmp_path), "trials", "lr=0.1", "s1", TRIALS[:1])
    write_rows(str(tmp_path), "trials", "digits", "s1", TRIALS[1:])
    (tmp_path / "trials" / "dataset=lr%3D0.1").rename(tmp_path / "trials" / "dataset=lr=0.1")
    counted = query(str(tmp_path), "SELECT dataset, count(*) AS n FROM trials GROUP BY dataset ORDER BY n")
    assert counted.values.tolist() == [["lr=0.1", 1], ["digits", 3]]


def test_write_never_touches_another_sweeps_folder(tmp_path):
    write_rows(str(tmp_path), "trials", "digits", "s1", TRIALS[:1])
    other = tmp_path / "trials" / "dataset=digits" / "sweep=s1"
    before = files_under(other)
    write_rows(str(tmp_path), "trials", "digits", "s2", [{**TRIALS[0], "status": "completed"}])
    write_rows(str(tmp_path), "trials", "digits", "s2", TRIALS[1:])
    assert files_under(other) == before
    assert len(files_under(tmp_path / "trials" / "dataset=digits" / "sweep=s2")) == 2


def test_read_table_limits_to_one_dataset(tmp_path):
    write_rows(str(tmp_path), "trials", "digits", "s1", TRIALS[:1])
    write_rows(str(tmp_path), "trials", "ionosphere", "s1", TRIALS[1:])
    table = read_table(str(tmp_path), "trials", dataset="ionosphere")
    assert sorted(table["trial_id"].to_pylist()) == ["t2", "t3", "t4"]
    assert set(table["dataset"].to_pylist()) == {"ionosphere"}


def test_a_read_of_one_run_or_dataset_opens_no_file_of_the_others(tmp_path, capsys):
    """`read_table(dataset=, sweep=)` (a resume's check of its run, `rank --dataset`) reads
    the files of the part it asks for only: on an object store each file read is a request,
    and a bad file of another run is no concern of this one's."""
    write_rows(str(tmp_path), "trials", "digits", "s1", TRIALS[:1])
    write_rows(str(tmp_path), "trials", "digits", "s2", TRIALS[1:])
    write_rows(str(tmp_path), "trials", "ionosphere", "s1", TRIALS[1:2])
    junk = tmp_path / "trials" / "dataset=digits" / "sweep=s2" / "part-junk.parquet"
    junk.write_text("not parquet")
    capsys.readouterr()
    assert read_table(str(tmp_path), "trials", sweep="s1")["trial_id"].to_pylist() == ["t1", "t2"]
    assert read_table(str(tmp_path), "trials", dataset="digits", sweep="s1")["trial_id"].to_pylist() == ["t1"]
    assert read_table(str(tmp_path), "trials", dataset="ionosphere")["trial_id"].to_pylist() == ["t2"]
    assert capsys.readouterr().err == ""
    assert sorted(read_table(str(tmp_path), "trials", dataset="digits")["trial_id"].to_pylist()) == ["t1", "t2", "t3",
                                                                                                     "t4"]
    assert str(junk) in capsys.readouterr().err


def test_a_trial_written_twice_reads_back_once_the_later_record(tmp_path):
    write_rows(str(tmp_path), "trials", "digits", "s1", [{**TRIALS[0], "status": "early_stopped", "epochs": 3}])
    write_rows(str(tmp_path), "trials", "digits", "s1", [TRIALS[1]])
    write_rows(str(tmp_path), "trials", "digits", "s1", [{**TRIALS[0], "status": "completed", "epochs": 10}])
    frame = read_frame(str(tmp_path), "trials").set_index("trial_id")
    assert sorted(frame.index) == ["t1", "t2"]
    assert frame.loc["t1", "status"] == "completed" and frame.loc["t1", "epochs"] == 10


def test_the_same_trial_id_in_two_sweeps_is_two_trials(tmp_path):
    write_rows(str(tmp_path), "trials", "digits", "s1", [TRIALS[0]])
    write_rows(str(tmp_path), "trials", "digits", "s2", [TRIALS[0]])
    frame = read_frame(str(tmp_path), "trials")
    assert sorted(frame["sweep"]) == ["s1", "s2"]


@pytest.mark.parametrize("same_file", [False, True], ids=["after-a-resume", "retried-within-one-flush"])
def test_epochs_keep_the_latest_record_of_each_trial_and_epoch(tmp_path, same_file):
    first = [{"trial_id": "t1", "epoch": 1, "loss": 1.0}, {"trial_id": "t1", "epoch": 2, "loss": 1.0},
             {"trial_id": "t2", "epoch": 1, "loss": 2.0}]
    again = [{"trial_id": "t1", "epoch": e, "loss": 0.5} for e in (1, 2, 3)]
    if same_file:
        write_rows(str(tmp_path), "epochs", "digits", "s1", first + again)
    else:
        write_rows(str(tmp_path), "epochs", "digits", "s1", first)
        write_rows(str(tmp_path), "epochs", "digits", "s1", again)
    frame = read_frame(str(tmp_path), "epochs").sort_values(["trial_id", "epoch"])
    assert list(zip(frame["trial_id"], frame["epoch"], frame["loss"])) == [
        ("t1", 1, 0.5), ("t1", 2, 0.5), ("t1", 3, 0.5), ("t2", 1, 2.0)]


def truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def overwrite_middle(path):
    """Footer intact, data pages garbage: the schema reads, the rows do not."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[100:len(data) // 2] = b"\xab" * (len(data) // 2 - 100)
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("damage", [truncate, overwrite_middle])
def test_read_table_skips_bad_files_with_one_warning_each_and_keeps_them(tmp_path, capsys, damage):
    root = str(tmp_path)
    write_rows(root, "epochs", "digits", "s1", [{"trial_id": "good", "epoch": 1, "loss": 1.0}])
    folder = tmp_path / "epochs" / "dataset=digits" / "sweep=s1"
    broken = write_rows(root, "epochs", "digits", "s1",
                        [{"trial_id": f"t{i}", "epoch": e, "loss": 1.0 / e} for i in range(20) for e in range(1, 20)])
    damage(broken)
    foreign = folder / "part-foreign.parquet"
    pq.write_table(pa.table({"trial_id": ["x"], "epoch": ["one"]}), foreign)
    notes = folder / "notes.txt"
    notes.write_text("lr looked too high\n")
    stray = tmp_path / "epochs" / "notes.txt"
    stray.write_text("stray\n")
    capsys.readouterr()

    table = read_table(root, "epochs")

    assert table["trial_id"].to_pylist() == ["good"]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4
    for bad in (broken, foreign, notes, stray):
        assert sum(str(bad) in line for line in lines) == 1, bad
        assert os.path.exists(bad)


def test_a_bad_file_is_named_once_by_a_command_reading_its_table_twice(tmp_path, capsys):
    """`plot`, `report` and `fit-schedule` read `trials`, then `epochs`, which reads `trials`
    again to know each trial's stored attempt."""
    write_rows(str(tmp_path), "trials", "digits", "s1", TRIALS)
    junk = tmp_path / "trials" / "dataset=digits" / "sweep=s1" / "notes.parquet"
    junk.write_text("not parquet")
    capsys.readouterr()
    read_table(str(tmp_path), "trials")
    read_table(str(tmp_path), "epochs")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and str(junk) in lines[0] and junk.exists()


def test_bad_files_of_one_table_do_not_affect_another(tmp_path, capsys):
    write_rows(str(tmp_path), "trials", "digits", "s1", TRIALS)
    (tmp_path / "epochs" / "dataset=digits" / "sweep=s1").mkdir(parents=True)
    (tmp_path / "epochs" / "dataset=digits" / "sweep=s1" / "notes.txt").write_text("x")
    assert read_table(str(tmp_path), "trials").num_rows == 4
    assert capsys.readouterr().err == ""


def test_folders_out_of_the_layout_and_hidden_files_are_skipped_with_one_warning_each(tmp_path, capsys):
    """A copy of a file under a partition folder without a value, or a folder below a
    sweep's, is not read as a dataset or sweep of its own: one warning names the folder. A
    hidden file (Finder's .DS_Store) is named too; our own temporary files are not. Nothing
    is touched."""
    good = write_rows(str(tmp_path), "trials", "digits", "s1", TRIALS)
    sweep_folder = tmp_path / "trials" / "dataset=digits" / "sweep=s1"
    strays = [tmp_path / "trials" / "dataset=" / "sweep=s1", tmp_path / "trials" / "dataset=digits" / "sweep=",
              sweep_folder / "extra"]
    for folder in strays:
        folder.mkdir(parents=True)
        (folder / "copy.parquet").write_bytes(open(good, "rb").read())
    hidden = sweep_folder / ".DS_Store"
    hidden.write_bytes(b"\0\0\0\1Bud1")
    (sweep_folder / ".part-1-ab.parquet.tmp").write_bytes(b"a write under way")
    before = files_under(tmp_path)
    capsys.readouterr()

    for table in ("trials", "epochs"):
        read_table(str(tmp_path), table)  # epochs reads trials again: each bad entry is named once all the same

    assert read_frame(str(tmp_path), "trials")[["dataset", "sweep", "trial_id"]].values.tolist() == [
        ["digits", "s1", t["trial_id"]] for t in TRIALS]
    lines = capsys.readouterr().err.splitlines()
    named = [strays[0].parent, strays[1], strays[2], hidden]
    assert len(lines) == len(named), lines
    for path in named:
        assert sum(f"skipping {path}:" in line for line in lines) == 1, (path, lines)
    assert files_under(tmp_path) == before


def test_a_trials_file_from_before_the_gpu_ids_column_still_reads(tmp_path, capsys):
    """A store written by an lrsweep without a later column stays readable: nulls there."""
    write_rows(str(tmp_path), "trials", "digits", "new", TRIALS[:1])
    before = SCHEMAS["trials"].remove(SCHEMAS["trials"].get_field_index("gpu_ids"))
    old = pa.Table.from_pylist(TRIALS[1:], schema=before)
    (tmp_path / "trials" / "dataset=digits" / "sweep=old").mkdir(parents=True)
    pq.write_table(old, tmp_path / "trials" / "dataset=digits" / "sweep=old" / "part-0.parquet")
    frame = read_frame(str(tmp_path), "trials")
    assert sorted(frame["sweep"]) == ["new"] + ["old"] * (len(TRIALS) - 1)
    assert frame["gpu_ids"].isna().all() and capsys.readouterr().err == ""


def test_a_store_written_before_the_later_columns_answers_queries(tmp_path):
    """`query`'s views read the later columns (`LATER_COLUMNS`) of a store none of whose files
    has them as nulls: the `epochs` view, which reads `resumed_from`, answers too."""
    from lrsweep.results.query import query

    old = pa.schema([f for f in SCHEMAS["trials"] if f.name not in LATER_COLUMNS["trials"]])
    folder = tmp_path / "trials" / "dataset=digits" / "sweep=old"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(TRIALS, schema=old), folder / "part-0.parquet")
    write_rows(str(tmp_path), "epochs", "digits", "old", [{"trial_id": TRIALS[0]["trial_id"], "epoch": 1}])
    trials = query(str(tmp_path), "SELECT resumed_from, budget, gpu_ids FROM trials")
    assert len(trials) == len(TRIALS) and trials.isna().all().all()
    assert len(query(str(tmp_path), "SELECT * FROM epochs")) == 1


def test_a_trials_epochs_are_those_of_the_attempt_its_stored_row_describes(tmp_path):
    """t1 was killed at epoch 6 and run again from scratch (resume, retry), stopped at
    epoch 3 this time: its history is the second attempt's 3 epochs. t2 errored at epoch 2
    (stored), was retried, and the retry was killed at epoch 1 before it was stored: its
    epochs are the stored attempt's two. t3 was never stored, killed twice: the latest
    record of each epoch. t4 failed at epoch 4 and went on from its epoch-2 checkpoint
    (its stored row keeps its first start): epochs 1-2 of the first attempt, 3-5 of the
    second. t5 went on from its epoch-2 checkpoint after a kill at epoch 6, and diverged at
    epoch 4 this time: the first attempt's epochs 5 and 6 are not its. Every reader agrees."""
    from datetime import datetime, timedelta, timezone

    from lrsweep.results.query import query

    root, t0 = str(tmp_path), datetime(2026, 1, 1, tzinfo=timezone.utc)

    def epochs(trial, numbers, start, loss):
        return [{"trial_id": trial, "epoch": e, "loss": loss, "end_time": start + timedelta(seconds=e)}
                for e in numbers]

    again = t0 + timedelta(seconds=60)
    write_rows(root, "epochs", "digits", "s1", epochs("t1", range(1, 7), t0, 1.0) + epochs("t2", (1, 2), t0, 1.0)
               + epochs("t3", (1, 2), t0, 1.0) + epochs("t4", range(1, 5), t0, 1.0)
               + epochs("t5", range(1, 7), t0, 1.0))
    write_rows(root, "trials", "digits", "s1", [
        {"trial_id": "t2", "status": "error", "epochs": 2, "start_time": t0, "end_time": t0 + timedelta(seconds=2)}])
    write_rows(root, "epochs", "digits", "s1", epochs("t1", (1, 2, 3), again, 0.5) + epochs("t2", (1,), again, 0.5)
               + epochs("t3", (1,), again, 0.5) + epochs("t4", (3, 4, 5), again, 0.5)
               + epochs("t5", (3, 4), again, 0.5))
    write_rows(root, "trials", "digits", "s1", [
        {"trial_id": "t1", "epochs": 3, "start_time": again, "end_time": again + timedelta(seconds=3)},
        {"trial_id": "t4", "epochs": 5, "start_time": t0, "end_time": again + timedelta(seconds=5), "resumed_from": 2},
        {"trial_id": "t5", "epochs": 4, "start_time": t0, "end_time": again + timedelta(seconds=4), "resumed_from": 2}])

    expected = [("t1", 1, 0.5), ("t1", 2, 0.5), ("t1", 3, 0.5), ("t2", 1, 1.0), ("t2", 2, 1.0),
                ("t3", 1, 0.5), ("t3", 2, 1.0), ("t4", 1, 1.0), ("t4", 2, 1.0), ("t4", 3, 0.5), ("t4", 4, 0.5),
                ("t4", 5, 0.5), ("t5", 1, 1.0), ("t5", 2, 1.0), ("t5", 3, 0.5), ("t5", 4, 0.5)]
    frame = read_frame(root, "epochs").sort_values(["trial_id", "epoch"])
    assert list(zip(frame["trial_id"], frame["epoch"], frame["loss"])) == expected
    queried = query(root, "SELECT trial_id, epoch, loss FROM epochs ORDER BY trial_id, epoch")
    assert [tuple(row) for row in queried.values.tolist()] == expected


def test_an_empty_store_reads_as_an_empty_table_with_every_column(tmp_path):
    table = read_table(str(tmp_path / "nothing yet"), "trials")
    assert table.num_rows == 0
    assert table.schema.names == SCHEMAS["trials"].names + ["dataset", "sweep"]


def test_check_writable_names_the_plain_file_in_the_way(tmp_path):
    plain = tmp_path / "results.txt"
    plain.write_text("")
    reason = check_writable(str(plain / "sub" / "results"))
    assert reason is not None and str(plain) in reason


def test_check_writable_accepts_a_new_nested_folder_and_creates_nothing(tmp_path):
    assert check_writable(str(tmp_path / "a" / "b" / "results")) is None
    assert list(tmp_path.iterdir()) == []


def test_sweep_exists_only_for_a_sweep_with_files(tmp_path):
    root = str(tmp_path)
    assert not sweep_exists(root, "s1")
    write_rows(root, "epochs", "digits", "s1", [{"trial_id": "t1", "epoch": 1}])
    assert sweep_exists(root, "s1")
    assert not sweep_exists(root, "s")
    assert not sweep_exists(root, "s2")


def test_sweep_exists_ignores_a_folder_a_crashed_first_write_left_without_files(tmp_path):
    folder = tmp_path / "trials" / "dataset=digits" / "sweep=s1"
    folder.mkdir(parents=True)
    (folder / ".part-1-abc.parquet.tmp").write_bytes(b"PAR1")  # killed before the rename
    assert not sweep_exists(str(tmp_path), "s1")
