"""Case strategies of the archive and config loaders: ``.pt2`` and TorchScript zips,
artifact manifests, recipe YAML."""

from __future__ import annotations

from hypothesis import strategies as st

from edgeopt.fuzz import seeds
from edgeopt.fuzz.harness import Tree
from edgeopt.fuzz.mutate import JSON_VALUES, NASTY_JSON, mutated, mutated_tree, mutated_zip

# YAML that breaks parsers by depth, aliases, tags or documents rather than syntax.
# 800 levels already exceed Python's recursion limit in PyYAML; 5000 take 1.2 s a case.
NASTY_YAML = ["a: &a [*a]", "- " * 5000 + "x", "[" * 800 + "]" * 800,
              "a: &a ['x','x','x','x','x','x','x','x']\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\n"
              "c: &c [*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c]\n"
              "steps: [*d,*d,*d,*d,*d,*d,*d,*d]",
              "!!python/object/apply:os.system ['true']", "steps: !!binary AAAA", "? [a]\n: b",
              "%YAML 1.1\n---\nsteps: []\n...\n---\nname: two", "\t- tab", "name: \x00"]

# --------------------------------------------------------------------------- archives


@st.composite
def pt2_cases(draw) -> Tree:
    return Tree({"model.pt2": draw(mutated_zip(seeds.pt2_archive()))}, "model.pt2")


@st.composite
def torchscript_cases(draw) -> Tree:
    name = draw(st.sampled_from(["model.pt", "model.ts"]))
    return Tree({name: draw(mutated_zip(seeds.torchscript_archive()))}, name)

# --------------------------------------------------------------------------- manifest


@st.composite
def manifest_cases(draw) -> Tree:
    model = seeds.onnx_model()
    manifest = seeds.manifest_for(model)
    kind = draw(st.sampled_from(["tree", "tree", "tree", "bytes", "model", "nasty", "valid"]))
    if kind == "model":
        # A damaged model file whose checksum was updated to match: what a broken tool
        # (or a hand edit) leaves; the checksum alone cannot catch it.
        model = draw(mutated(model))
        manifest = seeds.manifest_for(model)
    if kind == "tree":
        manifest = draw(mutated_tree(manifest, keys=st.sampled_from(list(manifest))
                                     | st.text(max_size=8)))
    text = seeds.dumps(manifest)
    if kind == "bytes":
        text = draw(mutated(text))
    elif kind == "nasty":
        text = draw(st.sampled_from(NASTY_JSON)).encode()
    return Tree({"art/manifest.json": text, "art/model.onnx": model}, "art")

# --------------------------------------------------------------------------- recipes


@st.composite
def recipe_cases(draw) -> Tree:
    import yaml

    recipe = draw(st.sampled_from(seeds.builtin_recipes()))
    kind = draw(st.sampled_from(["tree", "tree", "tree", "bytes", "random", "nasty", "valid"]))
    if kind == "tree":
        recipe = draw(mutated_tree(recipe))
    text = yaml.safe_dump(recipe).encode()
    if kind == "bytes":
        text = draw(mutated(text))
    elif kind == "random":
        text = yaml.safe_dump(draw(JSON_VALUES)).encode()
    elif kind == "nasty":
        text = draw(st.sampled_from(NASTY_YAML)).encode()
    name = draw(st.sampled_from(["recipe.yaml", "recipe.yml"]))
    return Tree({name: text}, name)
