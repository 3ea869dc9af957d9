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


def test_region_labels_tell_hemispheres_apart():
    from atlas_engine.report.heatmap import region_labels

    groups = pd.DataFrame({"structure_id": [1, 2, 3, 4, 5],
                           "acronym": ["Cl", "Cl", "SFG", "X", "X"]})
    hemi = pd.Series({1: "L", 2: "R", 3: "", 4: "", 5: ""})
    labels = region_labels(groups, hemi)
    assert labels.to_dict() == {1: "Cl (L)", 2: "Cl (R)", 3: "SFG", 4: "X [4]", 5: "X [5]"}
    assert labels.is_unique


def test_heatmap_default_title_says_what_is_shown(tmp_path, monkeypatch):
    import matplotlib.axes

    titles = []
    original = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, t, *a, **k: titles.append(t) or original(self, t, *a, **k))
    rng = np.random.default_rng(2)
    df = pd.DataFrame(rng.normal(size=(6, 10)), columns=[f"G{i}" for i in range(10)])
    plot_heatmap(df, tmp_path / "h.png", top=4)
    assert titles == ["4 most variable of 10 genes across 6 regions (z-scored per gene)"]
