import numpy as np
import pandas as pd

from atlas_engine.report.heatmap import plot_heatmap, top_variable_genes


def test_top_variable_genes_matches_pandas_oracle():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(12, 40)), columns=[f"G{i}" for i in range(40)])
    df.iloc[3, 7] = np.nan
    expected = df.var(ddof=1).sort_values(ascending=False).index[:5].tolist()
    assert top_variable_genes(df, 5) == expected


def test_plot_heatmap_writes_png(tmp_path):
    rng = np.random.default_rng(2)
    df = pd.DataFrame(rng.normal(size=(6, 10)), columns=[f"G{i}" for i in range(10)],
                      index=[4010, 4011, 4012, 4013, 4014, 4015])
    out = plot_heatmap(df, tmp_path / "h.png", top=4, row_labels=pd.Series({4010: "AOrG"}))
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp.png"))
