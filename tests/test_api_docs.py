"""Every public function of the Python API has a complete numpydoc docstring.

The functions are those ``atlas_engine`` exports (its ``__all__``, imported lazily), with the
functions behind the callable subpackages (``ae.fetch(...)`` runs ``fetch_ahba``) and those
in their own ``__all__``, and the public methods of the exported classes. Each docstring has a
one-line summary; a ``Parameters`` section naming every parameter of the signature, each with
its type (``*args``/``**kwargs`` may be described without one), and no name the signature does
not have; a ``Returns`` section unless the function returns None; and no ``<choices:NAME>``
placeholder left unfilled.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

import pytest

import atlas_engine as ae


def _verb_target(module: object) -> Callable | None:
    """The function a callable subpackage forwards to (None for anything else)."""
    resolve = getattr(module, "__dict__", {}).get("_verb_target")
    return resolve() if resolve is not None else None


def _public_methods(cls: type) -> Iterator[tuple[str, Callable]]:
    for name, member in vars(cls).items():
        if not name.startswith("_") and inspect.isfunction(member):
            yield f"{cls.__name__}.{name}", member


def _api() -> dict[str, Callable]:
    found: dict[str, Callable] = {}
    for name in ae.__all__:
        if name == "__version__":
            continue
        obj = getattr(ae, name)
        target = _verb_target(obj)
        if target is not None:
            found[name] = target
            for sub in getattr(obj, "__all__", ()):
                member = getattr(obj, sub)
                if inspect.isfunction(member):
                    found[f"{name}.{sub}"] = member
        elif inspect.isclass(obj):
            found.update(_public_methods(obj))
        else:
            found[name] = obj
    return found


API = _api()


def _sections(doc: str) -> dict[str, list[str]]:
    """numpydoc sections (a title underlined with dashes) → their lines; ``""`` is the text
    before the first one."""
    lines = inspect.cleandoc(doc).splitlines()
    out: dict[str, list[str]] = {"": []}
    current = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        under = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.strip() and under and set(under) == {"-"} and len(under) >= len(line.strip()):
            current = line.strip()
            out[current] = []
            i += 2
            continue
        out[current].append(line)
        i += 1
    return out


def _entries(section: list[str]) -> list[tuple[list[str], str | None]]:
    """The entries of a Parameters section: (names, type or None) of each unindented line."""
    out = []
    for line in section:
        if not line.strip() or line[0].isspace():
            continue
        names, sep, kind = line.partition(" : ")
        out.append(([n.strip() for n in names.split(",")], kind.strip() if sep else None))
    return out


def test_the_api_is_found():
    for name in ("fetch", "afetch", "convert", "open_store", "verify_store", "aggregate",
                 "collapse_probes", "open_cube", "get_expression_data",
                 "ontology_from_structure_graph", "open_volume", "voxel_counts",
                 "structure_mask", "write_maps", "plot_map", "fetch.download_files",
                 "HumanBrainAtlas.get_microarray_expression", "RmaClient.model_rows"):
        assert name in API, name


@pytest.mark.parametrize("name", sorted(API))
def test_numpydoc_docstring(name):
    fn = API[name]
    doc = fn.__doc__
    assert doc and doc.strip(), f"{name}: no docstring"
    assert "<choices:" not in doc, f"{name}: a <choices:...> placeholder is left in"
    sections = _sections(doc)
    head = sections[""]
    assert head[0].strip(), f"{name}: the docstring does not start with its summary"
    assert len(head) == 1 or not head[1].strip(), f"{name}: the summary is not one line"

    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
    named = {p.name for p in params
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    variadic = {p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if params:
        assert "Parameters" in sections, f"{name}: no Parameters section"
        documented: set[str] = set()
        for names, kind in _entries(sections["Parameters"]):
            for n in names:
                bare = n.lstrip("*")
                documented.add(bare)
                if bare in named:
                    assert kind, f"{name}: parameter {bare!r} has no type"
        missing = named - documented
        assert not missing, f"{name}: parameters not documented: {sorted(missing)}"
        unknown = documented - named - variadic
        assert not unknown, f"{name}: documented but not parameters: {sorted(unknown)}"
    if sig.return_annotation not in (None, "None", inspect.Signature.empty):
        assert "Returns" in sections, f"{name}: no Returns section"


def test_choices_are_the_ones_the_code_accepts():
    """The valid names written into the docstrings are the tuples the checks use."""
    from atlas_engine.choices import AGGREGATE_STATS, COLLAPSE_METHODS, DONOR_MODES
    from atlas_engine.fetch.ahba import WHAT_CHOICES

    doc = API["aggregate"].__doc__
    for names in (AGGREGATE_STATS, COLLAPSE_METHODS, DONOR_MODES):
        for n in names:
            assert f'``"{n}"``' in doc, n
    for fn in (API["fetch"], API["afetch"]):
        for n in WHAT_CHOICES:
            assert f'``"{n}"``' in fn.__doc__, n
