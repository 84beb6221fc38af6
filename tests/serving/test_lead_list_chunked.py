"""A lead list file scored in chunks: the same file as the whole list in memory, every lead once,
refusals with the file's own line numbers, and reasons from contribution tables."""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import labels, lead
from features.contract import ContractError
from features.errors import InputError
from features.io import Export, write_table
from models.explain import fit_reason_tables, lead_reasons, top_reason_agreement
from models.sqo_likelihood import SQOLikelihoodModel
from serving import scoring
from serving.lead_list import ListRules
from serving.scoring import scan_lead_file, score_lead_list, score_scanned_list

DAY = pd.Timestamp("2026-06-30")


@pytest.fixture(scope="module")
def trained(small_export: Export) -> tuple[SQOLikelihoodModel, pd.DataFrame]:
    """An SQO model on the small export's settled leads, and its feature rows."""
    table = lead.build_training_set(small_export)
    lab = labels.lead_labels(small_export)
    decided = lab["decided"].reindex(table.index).to_numpy(dtype=bool, na_value=False)
    X = table.loc[decided].drop(columns=["as_of"]).reset_index(drop=True)
    y = lab.loc[table.index[decided], "is_sqo"].to_numpy(dtype=int)
    late = np.arange(len(X)) >= int(0.8 * len(X))
    model = SQOLikelihoodModel(categorical=lead.categorical_columns(X)).fit(
        X[~late].reset_index(drop=True),
        y[~late],
        X_cal=X[late].reset_index(drop=True),
        y_cal=y[late],
    )
    return model, X


@pytest.fixture(scope="module")
def listed(small_export: Export) -> pd.DataFrame:
    """A list of the export's leads without outcomes, some with times, some do-not-contact."""
    assert small_export.leads is not None
    leads = small_export.leads.drop(columns=["sqo_at", "meeting_at"]).reset_index(drop=True)
    return leads.head(1500).copy()


def _chunked(
    model: SQOLikelihoodModel,
    path: Path,
    out: Path,
    tmp: Path,
    *,
    rules: ListRules,
    history: Export | None,
    chunk_rows: int = 200,
    exact_top: int | None = 50,
    workers: int | None = None,
    peaks: list[float] | None = None,
) -> dict:
    folder = tmp / "spool"
    folder.mkdir(exist_ok=True)
    scan = scan_lead_file(path, folder, chunk_rows=chunk_rows, keep_pool=history is None)
    return score_scanned_list(
        model,
        scan,
        out,
        model_version="7",
        as_of=DAY,
        history=history,
        rules=rules,
        exact_top=exact_top,
        workers=workers,
        worker_peaks=peaks,
    )


RULES = [
    ListRules(),
    ListRules(max_per_account=1, top=600, recontact_days=30),
    ListRules(capacity_each=40),
]


@pytest.mark.parametrize("with_history", [False, True])
@pytest.mark.parametrize("rules", RULES, ids=["default", "cap-top-recontact", "allocate"])
def test_chunked_file_equals_the_list_scored_in_memory(
    trained: tuple[SQOLikelihoodModel, pd.DataFrame],
    listed: pd.DataFrame,
    small_export: Export,
    tmp_path: Path,
    rules: ListRules,
    with_history: bool,
) -> None:
    model, _ = trained
    history = small_export if with_history else None
    src = tmp_path / "list.csv"
    write_table(listed, src)
    whole, summary = score_lead_list(
        model,
        listed,
        model_version="7",
        as_of=DAY,
        history=history,
        rules=rules,
        exact_top=50,
    )
    expected = tmp_path / "whole.csv"
    write_table(whole, expected)
    out = tmp_path / "chunked.csv"
    streamed = _chunked(model, src, out, tmp_path, rules=rules, history=history)
    assert out.read_text() == expected.read_text()
    assert streamed == summary
    # reasons came from tables for the lower ranks and exactly for the top 50
    assert summary["exact_reasons_for"] <= 50 < summary["reasons_for"]
    got = pd.read_csv(out, dtype=str)
    assert sorted(got["lead_id"]) == sorted(listed["lead_id"].astype(str))  # each lead once
    assert not list((tmp_path / "spool").iterdir())  # the spooled chunks are gone


def test_parquet_out_holds_the_same_rows(
    trained: tuple[SQOLikelihoodModel, pd.DataFrame], listed: pd.DataFrame, tmp_path: Path
) -> None:
    model, _ = trained
    src = tmp_path / "list.parquet"
    write_table(listed, src)
    _chunked(model, src, tmp_path / "a.csv", tmp_path, rules=ListRules(top=300), history=None)
    _chunked(model, src, tmp_path / "b.parquet", tmp_path, rules=ListRules(top=300), history=None)
    a = pd.read_csv(tmp_path / "a.csv", dtype=str, keep_default_na=False)
    b = pd.read_parquet(tmp_path / "b.parquet")
    assert list(a.columns) == list(b.columns) and len(a) == len(listed)
    assert a["lead_id"].tolist() == b["lead_id"].astype(str).tolist()
    assert np.allclose(a["sqo_probability"].astype(float), b["sqo_probability"])


def test_a_bad_row_in_a_late_chunk_is_refused_with_its_line_and_nothing_written(
    trained: tuple[SQOLikelihoodModel, pd.DataFrame], listed: pd.DataFrame, tmp_path: Path
) -> None:
    model, _ = trained
    src = tmp_path / "list.csv"
    write_table(listed, src)
    lines = src.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    col = header.index("employees")
    cells = lines[1400].rstrip("\n").split(",")  # line 1401 of the file, in the 7th chunk
    cells[col] = "many"
    lines[1400] = ",".join(cells) + "\n"
    cells = lines[1450].rstrip("\n").split(",")  # and a repeated id further down
    cells[header.index("lead_id")] = listed["lead_id"].iloc[0]
    lines[1450] = ",".join(cells) + "\n"
    src.write_text("".join(lines))
    out = tmp_path / "out.csv"
    with pytest.raises(ContractError) as caught:
        _chunked(model, src, out, tmp_path, rules=ListRules(), history=None)
    text = str(caught.value)
    assert "lead list" in text and "line 1401" in text and "employees" in text
    assert not out.exists()
    # once the value is fixed, the repeated id is named with both its lines
    cells = lines[1400].rstrip("\n").split(",")
    cells[col] = "12"
    lines[1400] = ",".join(cells) + "\n"
    src.write_text("".join(lines))
    with pytest.raises(ContractError) as caught:
        _chunked(model, src, out, tmp_path, rules=ListRules(), history=None)
    assert "lines 2, 1451" in str(caught.value)
    assert not out.exists()


def test_reason_tables_agree_with_exact_treeshap_on_held_out_leads(
    trained: tuple[SQOLikelihoodModel, pd.DataFrame],
) -> None:
    model, X = trained
    fit_rows, held_out = X.iloc[: len(X) // 2], X.iloc[len(X) // 2 :]
    tables = fit_reason_tables(model, fit_rows)
    assert tables is not None and tables.rows == len(fit_rows)
    agreement = top_reason_agreement(model, held_out, tables)
    # measured 0.89 on the 20,000-lead simulation; a small model's is lower but far from chance
    assert agreement >= 0.6
    # a lead explained exactly keeps its exact text; the table texts read the same way
    exact = lead_reasons(model, held_out.head(40))
    mixed = lead_reasons(model, held_out.head(40), tables=tables, exact=np.arange(40) < 10)
    assert mixed.iloc[:10].tolist() == exact.iloc[:10].tolist()
    assert (mixed != "").all()


def test_a_list_with_outcomes_reads_the_whole_list_for_its_rates(
    trained: tuple[SQOLikelihoodModel, pd.DataFrame], small_export: Export, tmp_path: Path
) -> None:
    """Past leads with outcomes feed the similar-lead rates: chunked, they still see them all."""
    model, _ = trained
    assert small_export.leads is not None
    listed = small_export.leads.head(1200).reset_index(drop=True)
    src = tmp_path / "list.csv"
    write_table(listed, src)
    whole, _ = score_lead_list(
        model, listed, model_version="7", as_of=DAY, rules=ListRules(), exact_top=50
    )
    write_table(whole, tmp_path / "whole.csv")
    _chunked(model, src, tmp_path / "chunked.csv", tmp_path, rules=ListRules(), history=None)
    assert (tmp_path / "chunked.csv").read_text() == (tmp_path / "whole.csv").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("with_history", [False, True])
def test_worker_processes_write_the_same_file(
    trained: tuple[SQOLikelihoodModel, pd.DataFrame],
    listed: pd.DataFrame,
    small_export: Export,
    tmp_path: Path,
    with_history: bool,
) -> None:
    """Two worker processes scoring the chunks give the file this process gives, byte for byte."""
    model, _ = trained
    history = small_export if with_history else None
    src = tmp_path / "list.csv"
    write_table(listed, src)
    rules = ListRules(max_per_account=2, top=900, recontact_days=30)
    here = _chunked(model, src, tmp_path / "here.csv", tmp_path, rules=rules, history=history)
    peaks: list[float] = []
    pooled = _chunked(
        model,
        src,
        tmp_path / "pooled.csv",
        tmp_path,
        rules=rules,
        history=history,
        workers=2,
        peaks=peaks,
    )
    assert (tmp_path / "pooled.csv").read_bytes() == (tmp_path / "here.csv").read_bytes()
    assert pooled == here
    assert len(peaks) == 2 and all(p > 0 for p in peaks)  # each worker's peak memory, in MB
    assert not list((tmp_path / "spool").iterdir())
    # a Parquet output from the workers holds the same rows too
    _chunked(
        model, src, tmp_path / "pooled.parquet", tmp_path, rules=rules, history=history, workers=2
    )
    a = pd.read_csv(tmp_path / "here.csv", dtype=str, keep_default_na=False)
    b = pd.read_parquet(tmp_path / "pooled.parquet")
    assert a["lead_id"].tolist() == b["lead_id"].astype(str).tolist()


class _Unpicklable(SQOLikelihoodModel):
    """A model that cannot be handed to another process (as a champion of a kind defined in
    a notebook may be)."""

    def __reduce__(self) -> Any:
        raise pickle.PicklingError("not this one")


@pytest.mark.slow
def test_a_model_that_cannot_reach_the_workers_is_scored_here(
    trained: tuple[SQOLikelihoodModel, pd.DataFrame], listed: pd.DataFrame, tmp_path: Path
) -> None:
    model, _ = trained
    src = tmp_path / "list.csv"
    write_table(listed, src)
    here = _chunked(model, src, tmp_path / "here.csv", tmp_path, rules=ListRules(), history=None)
    odd = _Unpicklable(categorical=model.categorical)
    odd.__dict__.update(model.__dict__)
    got = _chunked(
        odd, src, tmp_path / "odd.csv", tmp_path, rules=ListRules(), history=None, workers=2
    )
    assert got == here
    assert (tmp_path / "odd.csv").read_bytes() == (tmp_path / "here.csv").read_bytes()


class _FailingOnLateLeads(SQOLikelihoodModel):
    """A model whose encoding refuses a lead of the sixth chunk, as a user mistake."""

    def encode(self, X: pd.DataFrame) -> np.ndarray:
        if "L-BROKEN" in set(X.index.astype(str)):
            raise InputError("lead L-BROKEN: industry 'n/a' is not one the model knows")
        return super().encode(X)


@pytest.mark.slow
def test_a_failure_in_a_worker_is_the_same_clear_error_and_nothing_is_written(
    trained: tuple[SQOLikelihoodModel, pd.DataFrame], listed: pd.DataFrame, tmp_path: Path
) -> None:
    model, _ = trained
    broken = listed.copy()
    broken.loc[1100, "lead_id"] = "L-BROKEN"
    src = tmp_path / "list.csv"
    write_table(broken, src)
    failing = _FailingOnLateLeads(categorical=model.categorical)
    failing.__dict__.update(model.__dict__)
    out = tmp_path / "out.csv"
    for workers in (0, 2):
        with pytest.raises(InputError) as caught:
            _chunked(failing, src, out, tmp_path, rules=ListRules(), history=None, workers=workers)
        assert str(caught.value) == "lead L-BROKEN: industry 'n/a' is not one the model knows"
        assert not out.exists()
        assert not [f for f in tmp_path.iterdir() if f.name.startswith(".out.csv")]


@pytest.mark.slow
@pytest.mark.parametrize("step", ["scoring", "explaining", "writing"])
def test_ctrl_c_with_workers_leaves_no_output_and_no_work_running(
    trained: tuple[SQOLikelihoodModel, pd.DataFrame],
    listed: pd.DataFrame,
    tmp_path: Path,
    step: str,
) -> None:
    """Ctrl-C (here raised by the progress report) stops the list: no output file, and once it
    is raised no worker writes to the spool any more (the caller removes it)."""
    model, _ = trained
    src = tmp_path / "list.csv"
    write_table(listed, src)
    folder = tmp_path / "spool"
    folder.mkdir()
    scan = scan_lead_file(src, folder, chunk_rows=200)
    out = tmp_path / "out.csv"

    def interrupt(name: str, done: int, total: int | None) -> None:
        if name == step and done >= 600:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score_scanned_list(
            model, scan, out, model_version="7", as_of=DAY, workers=2, progress=interrupt
        )
    assert not out.exists()
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".out.csv")]
    left = sorted(f.name for f in folder.iterdir())
    time.sleep(1.0)
    assert sorted(f.name for f in folder.iterdir()) == left


@pytest.mark.slow
def test_workers_are_used_for_a_long_list_only_when_a_core_is_free(
    trained: tuple[SQOLikelihoodModel, pd.DataFrame],
    listed: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Left to choose, a list past the size for workers gets two on an idle machine and none
    on one whose cores are busy (the load average at or above their number); the file is the
    same."""
    model, _ = trained
    monkeypatch.setattr(scoring, "POOL_MIN_ROWS", 1000)
    monkeypatch.setattr(scoring.os, "sched_getaffinity", lambda pid: {0, 1})
    texts = []
    for load, workers in ((0.4, 2), (2.0, 0), (0.9, 0)):
        monkeypatch.setattr(scoring.os, "getloadavg", lambda load=load: (load, load, load))
        rows = 800 if load == 0.9 else len(listed)  # a short list: never workers
        short = tmp_path / f"list-{rows}.csv"
        write_table(listed.head(rows), short)
        peaks: list[float] = []
        _chunked(
            model,
            short,
            tmp_path / f"out-{load}.csv",
            tmp_path,
            rules=ListRules(),
            history=None,
            peaks=peaks,
        )
        assert len(peaks) == workers
        if rows == len(listed):
            texts.append((tmp_path / f"out-{load}.csv").read_bytes())
    assert texts[0] == texts[1]


def test_the_workers_server_starts_without_mlflow() -> None:
    # every worker is forked from a server that imports the scoring code: MLflow, which only
    # the registry's reading needs, would add over a second to each list's start
    import subprocess
    import sys

    code = "import sys, serving.scoring; print(sorted(m for m in sys.modules if 'mlflow' in m))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert done.stdout.strip() == "[]"
