from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedge.core import KPI_NAMES
from fedge.simulation import (
    DataError,
    GeneratorConfig,
    SiteGenerator,
    export_kpi_csv,
    read_kpi_file,
)
from fedge.simulation._kpi_file import export_kpi_file
from fedge.simulation._source import ArchivedSites, archive_sites, open_sites


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kpi") / "sites.csv"
    export_kpi_csv(SiteGenerator(GeneratorConfig(num_sites=3, days=4, seed=5)), path)
    return path


def good_frame(exported: Path) -> pd.DataFrame:
    return pd.read_csv(exported, dtype=str, keep_default_na=False)


def write(frame: pd.DataFrame, tmp_path: Path, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_export_then_import_round_trips(exported: Path) -> None:
    gen = SiteGenerator(GeneratorConfig(num_sites=3, days=4, seed=5))
    sites = read_kpi_file(exported)
    assert [s.site_id for s in sites] == [gen.site_id(i) for i in range(3)]
    for s in sites:
        orig = gen.site(int(s.site_id.split("-")[1]))
        assert s.archetype == orig.archetype
        assert s.step_minutes == 5 and s.start == orig.start
        np.testing.assert_allclose(s.values, orig.values, atol=1e-3)
        np.testing.assert_array_equal(s.anomalies, orig.anomalies)


def test_parquet_and_missing_optional_kpis(exported: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(exported).drop(columns=["ul_prb_util", "cpu_util", "archetype", "anomaly"])
    path = tmp_path / "sites.parquet"
    frame.to_parquet(path)
    sites = read_kpi_file(path)
    assert len(sites) == 3
    assert np.isnan(sites[0].values[:, 1]).all() and np.isnan(sites[0].values[:, 4]).all()
    assert sites[0].archetype == "unknown"


def test_short_gaps_are_interpolated(exported: Path, tmp_path: Path) -> None:
    frame = good_frame(exported)
    frame = frame.drop(index=[10, 11, 12])  # three missing steps of the first site
    frame.loc[20, "dl_throughput_mbps"] = ""  # and one empty cell
    sites = read_kpi_file(write(frame, tmp_path))
    assert sites[0].steps == 4 * 288
    assert np.isfinite(sites[0].values[:, [0, 2, 3]]).all()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["timestamp"]), "missing required column 'timestamp'"),
        (lambda f: f.drop(columns=["active_ues"]), "missing required column 'active_ues'"),
        (lambda f: f.assign(colour="red"), "unknown column 'colour'"),
        (
            lambda f: f.assign(timestamp=f.timestamp.where(f.index != 5, "not-a-time")),
            r"row 7, column 'timestamp'",
        ),
        (
            lambda f: f.assign(dl_prb_util=f.dl_prb_util.where(f.index != 3, "abc")),
            r"row 5, column 'dl_prb_util'.*'abc'",
        ),
        (
            lambda f: f.assign(dl_prb_util=f.dl_prb_util.where(f.index != 3, "inf")),
            r"row 5, column 'dl_prb_util'.*finite",
        ),
        (
            lambda f: f.assign(dl_prb_util=f.dl_prb_util.where(f.index != 8, "130")),
            r"row 10, column 'dl_prb_util'.*outside",
        ),
        (
            lambda f: f.assign(active_ues=f.active_ues.where(f.index != 8, "-1")),
            r"row 10, column 'active_ues'.*outside",
        ),
        (lambda f: f.assign(site_id=f.site_id.where(f.index != 4, "")), r"row 6, column 'site_id'"),
        (
            lambda f: f.assign(anomaly=f.anomaly.where(f.index != 4, "meteor")),
            r"row 6, column 'anomaly'",
        ),
        (lambda f: pd.concat([f, f.iloc[[30]]]), r"rows 32 and \d+: duplicate timestamp"),
        (
            lambda f: f.assign(timestamp=f.timestamp.where(f.index != 9, "2026-03-02T00:47:00Z")),
            r"row 11, column 'timestamp': off the 5-minute grid",
        ),
        (lambda f: f.drop(index=range(100, 200)), "gap of 100 steps"),
        (lambda f: f.iloc[:500], "need >= 3"),
        (lambda f: f.iloc[:0], "no data rows"),
    ],
)
def test_bad_files_name_the_row_and_column(
    exported: Path, tmp_path: Path, mutate: Callable[[pd.DataFrame], pd.DataFrame], message: str
) -> None:
    with pytest.raises(DataError, match=message):
        read_kpi_file(write(mutate(good_frame(exported)), tmp_path))


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_kpi_file(tmp_path / "absent.csv")
    other = tmp_path / "data.xlsx"
    other.write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        read_kpi_file(other)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 nonsense")
    with pytest.raises(DataError, match="cannot read"):
        read_kpi_file(broken)


def test_archive_round_trip_and_spec(exported: Path, tmp_path: Path) -> None:
    sites = read_kpi_file(exported)
    archive = archive_sites(sites, tmp_path / "archive")
    again = open_sites(archive.spec())
    assert again.num_sites == 3
    np.testing.assert_array_equal(again.site(1).values, sites[1].values)
    with pytest.raises(DataError, match="not a site archive"):
        ArchivedSites(tmp_path)
    with pytest.raises(DataError, match="outside"):
        archive.site(3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('{"kind": "tape"}', "unknown site source"),
        ('{"kind": "generator", "colour": 1}', "bad generator spec"),
        ("{", "not JSON"),
    ],
)
def test_bad_source_specs(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        open_sites(spec)


def _fedge(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``fedge ARGS`` in process, as the console script runs it (typed errors exit 2)."""
    import sys

    from fedge._cli import main

    monkeypatch.setattr(sys, "argv", ["fedge", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_data_export_writes_real_parquet(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / f"sites{suffix}"
    args = ["data", "export", str(path), "--sites", "2", "--days", "3", "--seed", "5"]
    assert _fedge(args, monkeypatch) == 0
    assert path.read_bytes()[:4] == b"PAR1"  # Parquet's magic, not CSV text
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups == 2  # one per site, written as they come
    table = parquet.read()
    assert table.column_names == ["timestamp", "site_id", *KPI_NAMES, "archetype", "anomaly"]
    assert table.num_rows == 2 * 3 * 288
    gen = SiteGenerator(GeneratorConfig(num_sites=2, days=3, seed=5))
    for s in read_kpi_file(path):
        orig = gen.site(int(s.site_id.split("-")[1]))
        assert s.start == orig.start and s.archetype == orig.archetype
        np.testing.assert_array_equal(s.values, orig.values)  # float32 kept exactly
        np.testing.assert_array_equal(s.anomalies, orig.anomalies)


@pytest.mark.parametrize("name", ["sites.xlsx", "sites.json", "sites"])
def test_data_export_refuses_an_unknown_suffix(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / name
    assert _fedge(["data", "export", str(path), "--sites", "1", "--days", "3"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "cannot export to" in err and "use one of .csv, .parquet, .pq" in err
    assert not path.exists()
    with pytest.raises(DataError, match="cannot export"):
        export_kpi_file(SiteGenerator(GeneratorConfig(num_sites=1, days=3)), path)
