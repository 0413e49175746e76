"""``--data DIR``: a PM-file export of generated sites reads back as the CSV import does,
and the import format's rules (gaps, coverage, step) hold for PM folders too."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedge.core import KPI_NAMES, write_pm_file
from fedge.simulation import DataError, SiteGenerator, export_kpi_csv
from fedge.simulation._config import preset
from fedge.simulation._kpi_file import read_kpi_file
from fedge.simulation._pm_import import export_pm_folder, read_pm_sites, read_site_data

START = int(np.datetime64("2026-03-02T00:00", "m").astype(np.int64))  # minutes since the epoch
J = {name: i for i, name in enumerate(KPI_NAMES)}


@pytest.fixture(scope="module")
def generator() -> SiteGenerator:
    return SiteGenerator(replace(preset("smoke").generator, num_sites=3))


def test_a_pm_export_reads_back_as_the_csv_import(generator: SiteGenerator, tmp_path: Path) -> None:
    pm_dir = export_pm_folder(generator, tmp_path / "pm")
    assert len(list(pm_dir.glob("A*_site-0000*.xml"))) == 3 * 8  # one file per site-day
    csv = read_kpi_file(export_kpi_csv(generator, tmp_path / "export.csv"))
    pm, info = read_site_data(pm_dir)
    assert info["source"] == "pm" and info["sites"] == 3 and info["step_minutes"] == 5
    assert info["ignored_counters"] == {} and info["suspect_values"] == 0
    assert [s.site_id for s in pm] == [s.site_id for s in csv]
    for p, c, g in zip(pm, csv, generator, strict=True):
        assert (p.start, p.step_minutes, p.steps) == (c.start, c.step_minutes, c.steps)
        np.testing.assert_allclose(p.values, c.values, atol=1e-4, rtol=0)  # the CSV's 4 decimals
        np.testing.assert_allclose(p.values, g.values, atol=2e-5, rtol=1e-6)


def test_a_file_is_still_the_csv_path(generator: SiteGenerator, tmp_path: Path) -> None:
    csv = export_kpi_csv(generator, tmp_path / "export.csv")
    sites, info = read_site_data(csv)
    assert info == {"source": "file"} and len(sites) == 3


def _cell(days: float, step: int = 15) -> np.ndarray:
    n = int(days * 1440 // step)
    t = np.arange(n)
    return np.column_stack(
        [
            50 + 10 * np.sin(t / 10),
            20 + np.zeros(n),
            100 + t % 7,
            10 + t % 5,
            30 + np.zeros(n),
        ]
    ).astype(np.float64)


def test_short_gaps_are_interpolated_and_long_ones_refused(tmp_path: Path) -> None:
    values = _cell(4)
    values[10:22, J["dl_throughput_mbps"]] = np.nan  # 12 periods: filled
    write_pm_file(tmp_path / "ok" / "A.xml", "g1", {"1": values}, START, 15)
    (site,), _ = read_pm_sites(tmp_path / "ok")
    expected = np.interp(np.arange(10, 22), [9, 22], values[[9, 22], J["dl_throughput_mbps"]])
    np.testing.assert_allclose(site.values[10:22, J["dl_throughput_mbps"]], expected, rtol=1e-5)
    values[22, J["dl_throughput_mbps"]] = np.nan  # 13 periods: refused
    write_pm_file(tmp_path / "long" / "A.xml", "g1", {"1": values}, START, 15)
    with pytest.raises(
        DataError,
        match=r"cell g1/NRCell=1: dl_throughput_mbps is missing for 13 periods from 2026-03-02T02:30Z",
    ):
        read_pm_sites(tmp_path / "long")


def test_a_target_with_no_value_is_refused(tmp_path: Path) -> None:
    values = _cell(4)
    values[:, J["active_ues"]] = np.nan  # every RRC.ConnMean NIL
    write_pm_file(tmp_path / "pm" / "A.xml", "g1", {"1": values}, START, 15)
    with pytest.raises(DataError, match="cell g1/NRCell=1 has no value for active_ues"):
        read_pm_sites(tmp_path / "pm")


def test_a_cell_shorter_than_three_days_is_refused(tmp_path: Path) -> None:
    write_pm_file(tmp_path / "pm" / "A.xml", "g1", {"1": _cell(2)}, START, 15)
    with pytest.raises(DataError, match=r"cell g1/NRCell=1 covers 2\.0 days; need >= 3"):
        read_pm_sites(tmp_path / "pm")


def test_a_step_other_than_the_files_granularity_is_refused(tmp_path: Path) -> None:
    write_pm_file(tmp_path / "pm" / "A.xml", "g1", {"1": _cell(4)}, START, 15)
    with pytest.raises(DataError, match="granularity is 15 min, not the 5 min asked for"):
        read_pm_sites(tmp_path / "pm", step_minutes=5)


def test_reader_errors_reach_the_simulation_as_data_errors(tmp_path: Path) -> None:
    (tmp_path / "pm").mkdir()
    (tmp_path / "pm" / "A.xml").write_text("<measCollecFile/>")
    with pytest.raises(
        DataError, match="root element 'measCollecFile' in namespace 'no namespace'"
    ):
        read_site_data(tmp_path / "pm")


def test_a_site_with_several_cells_gives_one_series_per_cell(tmp_path: Path) -> None:
    cells = {"1": _cell(3), "2": _cell(3) / 2}
    write_pm_file(tmp_path / "pm" / "A_g1.xml", "g1", cells, START, 15)
    write_pm_file(tmp_path / "pm" / "A_g2.xml", "g2", {"9": _cell(3)}, START, 15)
    sites, info = read_pm_sites(tmp_path / "pm")
    assert [s.site_id for s in sites] == ["g1/NRCell=1", "g1/NRCell=2", "g2"]
    assert info["sites"] == 2 and info["cells"] == 3
    assert str(sites[0].start) == "2026-03-02T00:00" and sites[0].step_minutes == 15
    np.testing.assert_allclose(sites[1].values[:, J["active_ues"]], cells["2"][:, J["active_ues"]])


def test_the_exporter_refuses_a_bad_file_length(generator: SiteGenerator, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="days_per_file must be >= 1"):
        export_pm_folder(generator, tmp_path, days_per_file=0)


@pytest.mark.slow
def test_the_simulation_on_a_pm_export_scores_as_on_the_csv(
    generator: SiteGenerator, tmp_path: Path
) -> None:
    from fedge.simulation._run import run

    base = preset("smoke")
    config = replace(
        base,
        generator=generator.config,
        methods=("local", "persistence"),
        num_rounds=2,
        workers=1,
        export_onnx=False,
    )
    csv = export_kpi_csv(generator, tmp_path / "export.csv")
    pm = export_pm_folder(generator, tmp_path / "pm")
    by_csv = run(replace(config, name="csv", data_path=str(csv)), tmp_path).report
    by_pm = run(replace(config, name="pm", data_path=str(pm)), tmp_path).report
    assert by_pm["data"]["source"] == "pm" and by_pm["data"]["num_sites"] == 3
    assert by_pm["data"]["ignored_counters"] == {}
    for method in config.methods:
        c, p = by_csv["forecast"]["methods"][method], by_pm["forecast"]["methods"][method]
        assert p["r2"] == pytest.approx(c["r2"], rel=0.01)
        assert p["rmse"] == pytest.approx(c["rmse"], rel=0.01)


def test_the_fleet_replays_a_pm_folder(tmp_path: Path) -> None:
    from fedge.simulation._fleet import FleetSpec, _new_state
    from fedge.simulation._replayer import open_source

    gen = SiteGenerator(replace(preset("smoke").generator, num_sites=2, days=3))
    pm = export_pm_folder(gen, tmp_path / "pm")
    source = open_source(_new_state(tmp_path / "fleet", FleetSpec(3, data=pm)))
    assert len(source.values) == 2 and source.num_sites == 3
    np.testing.assert_allclose(source.series(2), gen.site(0).values, atol=2e-5, rtol=1e-6)


def test_the_fleet_refuses_a_folder_without_pm_files_before_starting(tmp_path: Path) -> None:
    from fedge.simulation._fleet import FleetError, FleetSpec, up

    (tmp_path / "empty").mkdir()
    with pytest.raises(FleetError, match=r"--data: .*no measCollecFile"):
        up(tmp_path / "fleet", FleetSpec(2, data=tmp_path / "empty"))
    assert not (tmp_path / "fleet").exists()
