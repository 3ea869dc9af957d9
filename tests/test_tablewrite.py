"""Result tables written by polars/pyarrow read back to exactly what pandas would have written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas_engine.errors import ConfigError
from atlas_engine.report import tablewrite
from atlas_engine.report.tablewrite import write_table

# read back with pandas' correctly rounded parser (pandas 2's default "high" parser can be one
# ulp off; pandas 3 rounds correctly by default)
#: id columns read back as text (an integer column with gaps would come back as floats)
IDS = {"structure_id": str, "acronym": str, "name": str, "entrez": str}


def _frame(n_rows: int, n_cols: int, dtype: type, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.normal(5, 3, size=(n_rows, n_cols)).astype(dtype)
    if values.size:
        values[rng.random(values.shape) < 0.05] = np.nan
        flat = values.reshape(-1)
        extremes = np.array([1e-30, -0.0, 3.4e38, 1.5e-7, 123456789.0, -1e-5], dtype=dtype)
        flat[: min(flat.size, extremes.size)] = extremes[: flat.size]
    meta = pd.DataFrame({
        "structure_id": np.arange(n_rows, dtype=np.int64) + 4000,
        "acronym": [f"A{i}" for i in range(n_rows)],
        "name": [f'gyrus, "part" {i}' if i % 2 else f"lobe {i}" for i in range(n_rows)],
        "entrez": pd.array([None if i % 3 == 0 else i for i in range(n_rows)], dtype="Int64"),
    })
    body = pd.DataFrame(values, columns=[f"GENE{j}" for j in range(n_cols)])
    return pd.concat([meta, body], axis=1)


def _assert_same(got: pd.DataFrame, want: pd.DataFrame, dtype: type) -> None:
    assert list(got.columns) == list(want.columns)
    for c in want.columns:
        w = want[c]
        g = got[c]
        if pd.api.types.is_float_dtype(w.dtype):
            np.testing.assert_array_equal(g.to_numpy(dtype=np.float64).astype(dtype),
                                          w.to_numpy(), strict=False)
        else:
            assert g.astype(object).where(g.notna(), "").astype(str).tolist() == \
                   w.astype(object).where(w.notna(), "").astype(str).tolist(), c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n_rows", "n_cols"), [(7, 300), (300, 7), (1, 1), (600, 900)])
def test_wide_csv_reads_back_like_pandas(tmp_path, dtype, n_rows, n_cols):
    frame = _frame(n_rows, n_cols, dtype)
    write_table(frame, tmp_path / "t.csv")
    frame.to_csv(tmp_path / "oracle.csv", index=False)
    got = pd.read_csv(tmp_path / "t.csv", dtype=IDS, float_precision="round_trip")
    want = pd.read_csv(tmp_path / "oracle.csv", dtype=IDS,
                       float_precision="round_trip")
    _assert_same(got, frame, dtype)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_wide_csv_in_several_passes(tmp_path, monkeypatch):
    monkeypatch.setattr(tablewrite, "ROWS_PER_PASS", 3)
    frame = _frame(10, 50, np.float32)
    write_table(frame, tmp_path / "t.csv")
    _assert_same(pd.read_csv(tmp_path / "t.csv", dtype=IDS, float_precision="round_trip"), frame, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_parquet_round_trip(tmp_path, dtype):
    frame = _frame(9, 400, dtype)
    write_table(frame, tmp_path / "t.parquet")
    got = pd.read_parquet(tmp_path / "t.parquet")
    assert list(got.columns) == list(frame.columns)
    for c in frame.columns:
        if pd.api.types.is_float_dtype(frame[c].dtype):
            assert got[c].dtype == frame[c].dtype
            np.testing.assert_array_equal(got[c].to_numpy(), frame[c].to_numpy())
        else:
            assert got[c].astype(object).where(got[c].notna(), None).tolist() == \
                frame[c].astype(object).where(frame[c].notna(), None).tolist()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_long_layout_is_the_melted_table(tmp_path, suffix):
    frame = _frame(6, 11, np.float64)
    path = write_table(frame, tmp_path / f"t{suffix}", layout="long", var_name="gene")
    got = pd.read_csv(path, float_precision="round_trip") if suffix == ".csv" else pd.read_parquet(path)
    ids = ["structure_id", "acronym", "name", "entrez"]
    want = frame.melt(id_vars=ids, var_name="gene", value_name="value")
    # row-major: every gene of the first group, then the next group
    want = want.assign(_r=np.tile(np.arange(6), 11), _c=np.repeat(np.arange(11), 6))
    want = want.sort_values(["_r", "_c"]).drop(columns=["_r", "_c"]).reset_index(drop=True)
    assert list(got.columns) == ids + ["gene", "value"]
    assert got["gene"].tolist() == want["gene"].tolist()
    np.testing.assert_array_equal(got["value"].to_numpy(dtype=np.float64),
                                  want["value"].to_numpy())
    assert got["structure_id"].tolist() == want["structure_id"].tolist()
    assert got["name"].tolist() == want["name"].tolist()


def test_bad_requests_are_refused(tmp_path):
    frame = _frame(2, 2, np.float64)
    with pytest.raises(ConfigError, match="unknown table format"):
        write_table(frame, tmp_path / "t.xlsx")
    with pytest.raises(ConfigError, match="layout"):
        write_table(frame, tmp_path / "t.csv", layout="diagonal")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_wide_parquet_gathers_scattered_columns_and_keeps_categoricals(tmp_path):
    frame = _frame(5, 30, np.float32)
    frame["region"] = pd.Categorical([f"r{i % 2}" for i in range(5)])
    # an id column after the values and values out of their run: ids first, values in order
    frame = frame[["GENE3", "structure_id", "GENE0", "acronym", "region"]
                  + [f"GENE{j}" for j in range(4, 30)] + ["GENE1", "GENE2"]]
    write_table(frame, tmp_path / "t.parquet")
    got = pd.read_parquet(tmp_path / "t.parquet")
    values = [c for c in frame.columns if c.startswith("GENE")]
    assert list(got.columns) == ["structure_id", "acronym", "region", *values]
    assert isinstance(got["region"].dtype, pd.CategoricalDtype)
    assert got["region"].astype(str).tolist() == frame["region"].astype(str).tolist()
    np.testing.assert_array_equal(got[values].to_numpy(), frame[values].to_numpy())
    assert got[values].dtypes.unique().tolist() == [np.dtype(np.float32)]


def test_wide_parquet_reads_back_in_polars(tmp_path):
    pl = pytest.importorskip("polars")
    frame = _frame(4, 50, np.float64)
    write_table(frame, tmp_path / "t.parquet")
    got = pl.read_parquet(tmp_path / "t.parquet")
    assert got.columns == list(frame.columns)
    np.testing.assert_array_equal(got.select(pl.col(pl.Float64)).to_numpy(),
                                  frame.iloc[:, 4:].to_numpy())
    assert got["acronym"].to_list() == frame["acronym"].tolist()


def test_write_frame_keeps_the_table_as_it_is(tmp_path):
    from atlas_engine.report.tablewrite import write_frame

    frame = pd.DataFrame({"gene_symbol": ["A", "B", None], "value": [1.5, np.nan, 8.883417357010888e-05],
                          "selected": [True, False, True], "probe_id": [3, 1, 2]})
    csv = write_frame(frame, tmp_path / "t.csv")
    text = csv.read_text().splitlines()
    assert text[0] == "gene_symbol,value,selected,probe_id"      # order kept, no index
    assert text[2] == "B,,false,1"                                 # NaN as an empty cell
    back = pd.read_csv(csv, float_precision="round_trip")
    assert back["value"].iloc[2] == frame["value"].iloc[2]
    pq = pd.read_parquet(write_frame(frame, tmp_path / "t.parquet"))
    assert list(pq.columns) == list(frame.columns) and np.isnan(pq["value"].iloc[1])
    with pytest.raises(ConfigError, match="unknown table format"):
        write_frame(frame, tmp_path / "t.xlsx")
    assert not (tmp_path / "t.xlsx").exists()
