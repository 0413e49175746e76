"""The 3GPP PM reader: the hand-written TS 32.435 folder, and each malformed file refused
with an error that names the file and the element."""

from __future__ import annotations

import gzip
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from fedge.core import KPI_NAMES, PM_NAMESPACE, PmError, read_pm_folder, write_pm_file
from fedge.core import _pm as pm

FIXTURE = Path(__file__).parent.parent / "data" / "pm"
J = {name: i for i, name in enumerate(KPI_NAMES)}
CELL = "ManagedElement=g1,GNBDUFunction=1,NRCellDU=1"
TYPES = ("RRU.PrbTotDl", "DRB.UEThpDl", "RRC.ConnMean")


def info(
    end: str = "2026-03-02T00:15:00Z",
    *,
    duration: str = "PT900S",
    types: Sequence[str] = TYPES,
    values: dict[str, Sequence[str]] | None = None,
    suspect: str | None = None,
    gran: bool = True,
) -> str:
    rows = values if values is not None else {CELL: ("50", "1000", "3")}
    out = ["<measInfo>"]
    if gran:
        out.append(f'<granPeriod duration="{duration}" endTime="{end}"/>')
    out += [f'<measType p="{i + 1}">{t}</measType>' for i, t in enumerate(types)]
    for ldn, vals in rows.items():
        rs = "".join(f'<r p="{i + 1}">{v}</r>' for i, v in enumerate(vals))
        flag = f"<suspect>{suspect}</suspect>" if suspect is not None else ""
        out.append(f'<measValue measObjLdn="{ldn}">{rs}{flag}</measValue>')
    out.append("</measInfo>")
    return "".join(out)


def doc(*infos: str, root: str = "measCollecFile", ns: str = PM_NAMESPACE) -> str:
    return (
        f'<?xml version="1.0"?><{root} xmlns="{ns}">'
        '<fileHeader fileFormatVersion="32.435 V10.0"><measCollec beginTime="2026-03-02T00:00:00Z"/>'
        '</fileHeader><measData><managedElement localDn="g1"/>'
        + "".join(infos)
        + f'</measData><fileFooter><measCollec endTime="2026-03-02T01:00:00Z"/></fileFooter></{root}>'
    )


def folder(tmp_path: Path, *files: str, name: str = "pm") -> Path:
    d = tmp_path / name
    d.mkdir()
    for i, text in enumerate(files):
        (d / f"A{i}.xml").write_text(text)
    return d


def test_the_hand_written_folder_reads_into_cells_in_fedge_units() -> None:
    pm = read_pm_folder(FIXTURE)
    assert pm.step_minutes == 15 and pm.files == 3 and pm.periods == 3
    assert [(c.site, c.cell) for c in pm.cells] == [
        ("gNB1", "NRCell=1"),  # NRCellDU=1 (PRB, throughput) and NRCellCU=1 (RRC): one cell
        ("gNB1", "NRCell=2"),
        ("gNB2", "NRCell=7"),  # named relative to managedElement localDn="gNB2"
    ]
    # endTime 00:15+01:00 closes the first period: it starts 23:00 UTC the day before
    assert all(str(c.timestamps()[0]) == "2026-03-01T23:00" for c in pm.cells)
    one, two, seven = (c.values for c in pm.cells)
    assert one[0, J["dl_prb_util"]] == pytest.approx(50.0)  # 136.5 of 273 PRBs
    assert one[0, J["ul_prb_util"]] == pytest.approx(10.0)
    assert one[0, J["dl_throughput_mbps"]] == pytest.approx(85.0)  # 85,000 kbit/s
    assert one[0, J["active_ues"]] == 12
    assert one[0, J["cpu_util"]] == pytest.approx(50.0)  # mean of the DU's two processors
    # the suspect measValue's counters are missing, the CU's RRC count of that period is not
    assert np.isnan(one[1, [J["dl_prb_util"], J["ul_prb_util"], J["dl_throughput_mbps"]]]).all()
    assert one[1, J["active_ues"]] == 13 and one[1, J["cpu_util"]] == pytest.approx(60.0)
    assert one[2, J["dl_prb_util"]] == pytest.approx(60.0) and np.isnan(one[2, J["cpu_util"]])
    assert two[0, J["dl_prb_util"]] == pytest.approx(100.0)
    assert two[0, J["dl_throughput_mbps"]] == pytest.approx(150.0005)
    assert np.isnan(two[1, J["dl_prb_util"]]) and np.isnan(two[1, J["ul_prb_util"]])  # empty, NIL
    assert seven[:, J["dl_prb_util"]].tolist() == [42.5, 43.0, 44.0]  # RRU.PrbTotDl is a %
    assert math.isnan(seven[1, J["dl_throughput_mbps"]]) and np.isnan(seven[:, J["cpu_util"]]).all()
    summary = pm.summary()
    assert summary["sites"] == 2 and summary["cells"] == 3
    assert summary["ignored_counters"] == {"DRB.UEThpUl": 4}
    assert summary["slice_counters"] == {"DRB.UEThpDl.1-000001": 4, "RRU.PrbUsedDl.SNSSAI1": 4}
    assert summary["suspect_values"] == 5 and summary["missing_values"] == 3
    assert summary["skipped_files"] == ["README.txt"]


def test_the_writer_and_the_reader_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = np.column_stack(
        [
            rng.uniform(0, 100, 6),
            rng.uniform(0, 100, 6),
            rng.uniform(0, 500, 6),
            rng.integers(0, 300, 6).astype(float),
            rng.uniform(0, 100, 6),
        ]
    )
    values[2, J["ul_prb_util"]] = np.nan
    write_pm_file(tmp_path / "pm" / "A.xml", "g7", {"1": values}, 29540100, 5)
    (cell,) = read_pm_folder(tmp_path / "pm").cells
    assert (cell.site, cell.cell, cell.start_minute, cell.step_minutes) == (
        "g7",
        "NRCell=1",
        29540100,
        5,
    )
    np.testing.assert_allclose(cell.values, values, rtol=1e-6, atol=1e-5)


def test_the_writer_refuses_cells_of_different_lengths(tmp_path: Path) -> None:
    cells = {"1": np.zeros((3, len(KPI_NAMES))), "2": np.zeros((4, len(KPI_NAMES)))}
    with pytest.raises(PmError, match="same periods"):
        write_pm_file(tmp_path / "A.xml", "g1", cells, 0, 15)


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    d = folder(tmp_path)
    (d / "notes.txt").write_text("no PM here")
    with pytest.raises(PmError, match=r"no measCollecFile \(\*\.xml, \*\.xml\.gz\)"):
        read_pm_folder(d)
    with pytest.raises(PmError, match="not a folder"):
        read_pm_folder(d / "notes.txt")


def test_a_file_that_is_not_xml_is_refused(tmp_path: Path) -> None:
    d = folder(tmp_path, doc(info()), "timestamp,site_id\n")
    with pytest.raises(PmError, match=r"A1\.xml: not well-formed XML"):
        read_pm_folder(d)


@pytest.mark.parametrize(
    ("root", "ns", "why"),
    [
        ("measCollecFile", "urn:other", "namespace 'urn:other'"),
        ("measCollecFile", "", "namespace 'no namespace'"),
        ("measDataFile", PM_NAMESPACE, "not a measCollecFile"),
    ],
)
def test_a_wrong_root_or_namespace_is_refused(tmp_path: Path, root: str, ns: str, why: str) -> None:
    text = doc(info(), root=root, ns=ns).replace(' xmlns=""', "")
    with pytest.raises(PmError, match=rf"A0\.xml, <{root}>: root element '{root}' in {why}"):
        read_pm_folder(folder(tmp_path, text))


def test_a_doctype_and_its_entities_are_refused_before_expansion(tmp_path: Path) -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE measCollecFile [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        + doc(info()).split("?>", 1)[1].replace("<fileHeader", "<fileHeader>&c;</fileHeader><x", 1)
    )
    with pytest.raises(PmError, match=r"A0\.xml: DOCTYPE 'measCollecFile' refused"):
        read_pm_folder(folder(tmp_path, bomb))
    external = (
        '<!DOCTYPE measCollecFile SYSTEM "file:///etc/passwd">' + doc(info()).split("?>", 1)[1]
    )
    with pytest.raises(PmError, match="DOCTYPE"):
        read_pm_folder(folder(tmp_path, external, name="external"))


def test_a_missing_gran_period_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PmError, match=r"A0\.xml, measInfo 1: no granPeriod"):
        read_pm_folder(folder(tmp_path, doc(info(gran=False))))


def test_granularity_inconsistent_between_files_is_refused(tmp_path: Path) -> None:
    d = folder(tmp_path, doc(info()), doc(info("2026-03-02T00:20:00Z", duration="PT300S")))
    with pytest.raises(
        PmError,
        match=r"A1\.xml, measInfo 1, <granPeriod>: granularity 5 min differs from 15 min \(.*A0\.xml",
    ):
        read_pm_folder(d)


@pytest.mark.parametrize("count", [2, 4])
def test_a_meas_value_with_more_or_fewer_r_than_meas_types_is_refused(
    tmp_path: Path, count: int
) -> None:
    text = doc(info(values={CELL: ("1", "2", "3", "4")[:count]}))
    with pytest.raises(PmError, match=rf"measValue measObjLdn='{CELL}'>: {count} r for 3 measType"):
        read_pm_folder(folder(tmp_path, text))


def test_a_non_numeric_value_is_refused(tmp_path: Path) -> None:
    text = doc(info(values={CELL: ("50", "fast", "3")}))
    with pytest.raises(
        PmError,
        match=rf"A0\.xml, measInfo 1, period ending .*measObjLdn='{CELL}'>, <r>: DRB.UEThpDl = 'fast' is not a number",
    ):
        read_pm_folder(folder(tmp_path, text))


def test_a_period_reported_in_two_files_is_refused(tmp_path: Path) -> None:
    d = folder(tmp_path, doc(info()), doc(info("2026-03-02T00:30:00Z")), doc(info()))
    with pytest.raises(
        PmError, match=r"A2\.xml.*RRU.PrbTotDl for this period is already in .*A0\.xml"
    ):
        read_pm_folder(d)


def test_a_missing_required_counter_is_refused(tmp_path: Path) -> None:
    d = folder(tmp_path, doc(info(types=TYPES[:2], values={CELL: ("50", "1000")})))
    with pytest.raises(
        PmError, match=r"cell g1/NRCell=1: no RRC.ConnMean in any file, needed for active_ues"
    ):
        read_pm_folder(d)


def test_per_slice_sub_counters_do_not_stand_in_for_the_total(tmp_path: Path) -> None:
    types = ("RRU.PrbTotDl", "DRB.UEThpDl", "RRC.ConnMean.SNSSAI1", "RRC.ConnMean.1-0000FF")
    d = folder(tmp_path, doc(info(types=types, values={CELL: ("50", "1000", "2", "1")})))
    with pytest.raises(
        PmError, match=r"per-slice RRC.ConnMean.1-0000FF, RRC.ConnMean.SNSSAI1 are not summed"
    ):
        read_pm_folder(d)


def test_prb_usage_needs_both_counts_or_the_percentage(tmp_path: Path) -> None:
    types = ("RRU.PrbUsedDl", "DRB.UEThpDl", "RRC.ConnMean")
    d = folder(tmp_path, doc(info(types=types, values={CELL: ("50", "1000", "3")})))
    with pytest.raises(PmError, match=r"no RRU\.PrbUsedDl with RRU\.PrbAvailDl, or RRU\.PrbTotDl"):
        read_pm_folder(d)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            doc(info(duration="15 minutes")),
            r"<granPeriod>: duration '15 minutes' is not an ISO 8601",
        ),
        (doc(info(duration="PT7M")), "granularity PT7M is not whole minutes dividing a day"),
        (doc(info(duration="PT90S")), "granularity PT90S is not whole minutes"),
        (doc(info("yesterday")), "endTime 'yesterday' is not an ISO 8601 time"),
        (doc(info("2026-03-02T00:15:30Z")), "is not on a whole minute"),
        (doc(info(suspect="maybe")), r"<suspect>: suspect 'maybe' is not true or false"),
        (doc(info(values={CELL: ("50", "-1", "3")})), "DRB.UEThpDl = -1 is negative"),
        (doc(info(values={CELL: ("50", "inf", "3")})), "is not a finite number"),
        (
            doc(info(values={CELL: ("150", "1000", "3")})),
            r"dl_prb_util = 150 % from RRU.PrbTotDl, above 100",
        ),
        (
            doc(info(values={"NRCellDU": ("50", "1000", "3")})),
            "measObjLdn is not a list of Type=value",
        ),
        (
            doc(info(values={CELL: ("50", "1000", "3"), "": ("50", "1000", "3")})),
            r"A0\.xml, measInfo 1, period ending 2026-03-02T00:15:00Z, <measValue>: no measObjLdn",
        ),
        (
            doc(info(types=("RRU.PrbTotDl", "RRU.PrbTotDl", "RRC.ConnMean"))),
            "a counter is listed twice",
        ),
        (doc(info(types=("RRU.PrbTotDl", "", "RRC.ConnMean"))), "empty counter name"),
        (doc(info(types=(), values={})), "no measType"),
        (doc(info(values={"GNBDUFunction=1": ("50", "1000", "3")})), "no measValue names a cell"),
        (doc(info()).replace('<r p="3">', '<r p="9">'), r"<r>: p '9' is not a measType's"),
        (doc(info()).replace('<measType p="2">', '<measType p="1">'), "missing or repeated p '1'"),
        (
            doc(info()).replace(
                '<measType p="1">RRU.PrbTotDl</measType>',
                '<measTypes>RRU.PrbTotDl</measTypes><measType p="1">RRU.PrbTotDl</measType>',
            ),
            "both measType and measTypes",
        ),
        (
            doc(info()).replace("</measValue>", "<measResults>1 2 3</measResults></measValue>"),
            "both r and measResults",
        ),
        (
            doc(info())
            .replace(
                '<measType p="1">RRU.PrbTotDl</measType><measType p="2">DRB.UEThpDl</measType><measType p="3">RRC.ConnMean</measType>',
                "<measTypes>RRU.PrbTotDl DRB.UEThpDl RRC.ConnMean</measTypes>",
            )
            .replace(
                '<r p="1">50</r><r p="2">1000</r><r p="3">3</r>',
                "<measResults>50 1000</measResults>",
            ),
            "2 results for 3 measTypes",
        ),
        (
            doc(info())
            .replace('<managedElement localDn="g1"/>', "")
            .replace("ManagedElement=g1,", ""),
            "no ManagedElement in measObjLdn nor a managedElement localDn",
        ),
        (doc(info()).split("<fileHeader")[0] + "<measData/></measCollecFile>", "no fileHeader"),
        (doc(info()).split("<measData>")[0] + "</measCollecFile>", "no measData"),
        (doc(), "no measValue in any file"),
    ],
)
def test_each_malformed_element_is_refused_by_name(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(PmError, match=match) as caught:
        read_pm_folder(folder(tmp_path, text))
    assert "A0.xml" in str(caught.value) or "no measValue" in match


def test_a_period_off_the_cell_grid_is_refused(tmp_path: Path) -> None:
    d = folder(tmp_path, doc(info(), info("2026-03-02T00:35:00Z")))
    with pytest.raises(
        PmError,
        match="cell g1/NRCell=1: a period ends at 2026-03-02T00:35:00Z, off the 15-minute grid",
    ):
        read_pm_folder(d)


def test_gzip_compressed_files_read_like_plain_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    values = np.column_stack([rng.uniform(0, 100, 4) for _ in range(5)])
    write_pm_file(tmp_path / "plain" / "A.xml", "g7", {"1": values}, 29540100, 5)
    packed = tmp_path / "packed"
    packed.mkdir()
    text = (tmp_path / "plain" / "A.xml").read_bytes()
    (packed / "A.XML.gz").write_bytes(gzip.compress(text))
    (plain,) = read_pm_folder(tmp_path / "plain").cells
    (cell,) = read_pm_folder(packed).cells
    np.testing.assert_array_equal(cell.values, plain.values)
    assert (cell.site, cell.cell, cell.start_minute) == (plain.site, plain.cell, plain.start_minute)


def test_a_truncated_or_false_gzip_file_is_refused_by_name(tmp_path: Path) -> None:
    whole = gzip.compress(doc(info()).encode())
    for name, data in (("A1.xml.gz", whole[: len(whole) // 2]), ("A2.xml.gz", b"<xml/>")):
        d = tmp_path / name
        d.mkdir()
        (d / name).write_bytes(data)
        with pytest.raises(PmError, match=rf"{name}: not a complete gzip file"):
            read_pm_folder(d)


def test_a_compressed_file_that_expands_without_bound_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pm, "MAX_PM_FILE_BYTES", 4096)
    d = folder(tmp_path)
    bomb = doc(info()).replace("</measCollecFile>", " " * 10_000 + "</measCollecFile>")
    (d / "A1.xml.gz").write_bytes(gzip.compress(bomb.encode()))
    with pytest.raises(PmError, match=r"A1\.xml\.gz: more than 4,096 bytes of XML; refused"):
        read_pm_folder(d)
