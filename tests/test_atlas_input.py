"""The atlas arguments of get_expression_data (resolve_atlas): the info table checked as abagen
checks it, and abagen's atlas forms that are not supported refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from atlas_engine.errors import ConfigError


def _info(**cols):
    import pandas as pd

    base = {"id": [1, 2, 3], "hemisphere": ["L", "R", "B"],
            "structure": ["cortex", "subcortex", "cerebellum"]}
    base.update(cols)
    return pd.DataFrame({k: v for k, v in base.items() if v is not None})


def test_atlas_info_accepts_abagens_forms_in_any_case():
    import pandas as pd

    from atlas_engine.pipeline.matching import check_atlas_info

    t = check_atlas_info(_info(hemisphere=["lh", "Right", "bilateral"],
                               structure=["Cortex", "brainstem", "White Matter"]))
    assert t.index.name == "id" and t.index.tolist() == [1, 2, 3]
    assert t["hemisphere"].tolist() == ["L", "R", "B"]
    assert t["structure"].tolist() == ["cortex", "subcortex/brainstem", "white matter"]
    frame = _info(structure=[" cortex", "subcortex ", "cerebellum"]).rename(
        columns={"id": "ID", "hemisphere": " Hemisphere"})
    assert check_atlas_info(frame)["hemisphere"].tolist() == ["L", "R", "B"]
    indexed = _info().set_index("id")
    assert check_atlas_info(indexed).index.tolist() == [1, 2, 3]
    assert check_atlas_info(_info(id=[1.0, 2.0, 3.0])).index.dtype == np.int64
    # checked twice gives the same table
    pd.testing.assert_frame_equal(check_atlas_info(check_atlas_info(_info())),
                                  check_atlas_info(_info()))


@pytest.mark.parametrize("cols,needle", [
    ({"id": None}, "no id column"),                       # a RangeIndex is not the ids
    ({"structure": None}, "no structure column"),
    ({"hemisphere": ["L", "R", "X"]}, "hemisphere values ['X']"),
    ({"structure": ["cortex", "subcortical", "cerebellum"]}, "structure values ['subcortical']"),
    ({"id": ["a", "b", "c"]}, "not integers"),
    ({"id": [1.5, 2, 3]}, "not integers"),
])
def test_atlas_info_refused_naming_the_file(tmp_path, cols, needle):
    from atlas_engine.errors import FormatError
    from atlas_engine.pipeline.atlas_input import resolve_atlas

    path = tmp_path / "info.csv"
    _info(**cols).to_csv(path, index=False)
    labels = np.zeros((4, 4, 4), dtype=np.int64)
    labels[0, 0, :3] = [1, 2, 3]
    with pytest.raises(FormatError) as err:
        resolve_atlas((labels, np.eye(4)), str(path))
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value)
    with pytest.raises(ConfigError, match="atlas info: "):
        from atlas_engine.pipeline.matching import check_atlas_info

        check_atlas_info(_info(**cols))


@pytest.mark.parametrize("atlas", [{9861: "a.nii.gz", 10021: "b.nii.gz"},
                                   ("lh.label.gii", "rh.label.gii"), ["x.nii.gz"]])
def test_abagens_other_atlas_forms_refused_in_one_line(atlas):
    from atlas_engine.pipeline.atlas_input import resolve_atlas

    with pytest.raises(ConfigError, match="per-donor .* and surface atlases are not supported"):
        resolve_atlas(atlas, None)
