import pytest

from atlas_engine.errors import ConfigError
from atlas_engine.sources.donors import (
    DONORS,
    N_SAMPLES,
    get_donor,
    resolve_donors,
    well_known_files,
)


def test_donor_table_matches_known_facts():
    assert [d.id for d in DONORS] == [9861, 10021, 12876, 14380, 15496, 15697]
    assert [d.n_samples for d in DONORS] == [946, 893, 363, 529, 470, 501]
    assert N_SAMPLES == 3702
    assert get_donor("H0351.2001").microarray_wkf == 178238387
    assert get_donor(15697).microarray_wkf == 178236545


def test_resolve_donors_by_id_and_name_in_given_order():
    got = resolve_donors("15496,H0351.2001, 15496")
    assert [d.id for d in got] == [15496, 9861]
    assert len(resolve_donors("all")) == 6
    assert len(resolve_donors(None)) == 6
    with pytest.raises(ConfigError, match="unknown donor"):
        resolve_donors("1234")


def test_well_known_files_registry():
    files = well_known_files()
    assert files[178238359].filename == "normalized_microarray_donor12876.zip"
    assert files[267666525].filename == "genes_matrix_csv.zip"
    assert files[278447594].kind == "rnaseq"
