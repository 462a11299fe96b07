import dataclasses

import pytest

from compress import CompressError, Recipe
from compress.table.fields import Field
from compress.table.steps import FIELDS

KIND_TYPES = {"count": int, "counts": int | tuple[int, ...], "fraction": float, "float": float, "int": int,
              "bool": bool, "text": str}  # a choice field: the type of its choices


def _type(f: Field):
    return type(f.choices[0]) if f.kind == "choice" else KIND_TYPES[f.kind]


def _differences(recipe_fields, table: list[Field]) -> list[str]:
    """What Recipe (compress/table/recipe.py) must change to list the technique table's fields: each in the table's
    order, with the table's default and its kind's type."""
    mine = {f.name: f for f in recipe_fields}
    out = []
    for i, f in enumerate(table):
        where = f"after `{table[i - 1].name}`" if i else "first"
        if f.name not in mine:
            out.append(f"Recipe has no field {f.name} of the technique table: add "
                       f"`{f.name}: {getattr(_type(f), '__name__', _type(f))} = {f.default!r}` {where}")
            continue
        got = mine[f.name]
        if got.default != f.default or type(got.default) is not type(f.default):
            out.append(f"Recipe.{f.name} defaults to {got.default!r}; the table's default is {f.default!r}")
        if got.type != _type(f):
            out.append(f"Recipe.{f.name} is typed {got.type}; a {f.kind} field of the table is {_type(f)}")
    extra = [n for n in mine if n not in {f.name for f in table}]
    if extra:
        out.append(f"Recipe has field(s) no step of the table owns: {', '.join(extra)}")
    if not out and [f.name for f in recipe_fields] != [f.name for f in table]:
        out.append(f"Recipe's fields are not in the table's order: {', '.join(f.name for f in table)}")
    return out


def test_the_recipe_lists_the_tables_fields_in_order_with_their_defaults_and_types():
    assert _differences(dataclasses.fields(Recipe), list(FIELDS.values())) == []


def test_a_step_added_without_its_recipe_field_says_what_to_add():
    table = [*FIELDS.values(), Field("sparsity", "fraction", 1.0, "weights kept")]
    assert _differences(dataclasses.fields(Recipe), table) == [
        "Recipe has no field sparsity of the technique table: add `sparsity: float = 1.0` after `runtime`"]
    moved = [table[1], table[0], *table[2:-1]]
    assert _differences(dataclasses.fields(Recipe), moved) == [
        f"Recipe's fields are not in the table's order: {', '.join(f.name for f in moved)}"]
    wrong = [dataclasses.replace(f, default=0.5) if f.name == "ffn" else f for f in FIELDS.values()]
    assert _differences(dataclasses.fields(Recipe), wrong) == ["Recipe.ffn defaults to 1.0; the table's default is 0.5"]


def test_an_old_recipe_with_missing_fields_loads_with_the_defaults():
    r = Recipe.from_json('{"layers": 2, "quant": "int8"}')
    assert r == dataclasses.replace(Recipe(), layers=2, quant="int8")


def test_defaults_are_identity_and_hashable():
    r = Recipe()
    assert (r.rank_mode, r.quant) == ("none", "none")
    assert hash(r) == hash(Recipe()) and {r: 1}[Recipe()] == 1
    assert r.describe() == "original"


def test_json_round_trip():
    r = Recipe(rank_mode="budget", rank=0.4, quant="int8", quant_embeddings=False)
    assert Recipe.from_json(r.to_json()) == r
    assert Recipe.from_dict(r.to_dict()) == r


@pytest.mark.parametrize("kwargs, message", [
    ({"rank_mode": "svd"}, "rank_mode must be one of"),
    ({"rank": 0}, "from 0.0001 to 1"),
    ({"rank": 1.5}, "from 0.0001 to 1"),
    ({"rank": -0.2}, "from 0.0001 to 1"),
    ({"rank": "half"}, "must be a number"),
    ({"rank": True}, "must be a number"),
    ({"quant": "int3"}, "quant must be one of"),
    ({"quant_embeddings": "yes"}, "true or false"),
])
def test_validation_rejects_nonsense_with_a_message(kwargs, message):
    with pytest.raises(CompressError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        Recipe(**kwargs)


def test_from_dict_rejects_unknown_fields_and_bad_json():
    with pytest.raises(CompressError, match="unknown recipe field"):
        Recipe.from_dict({"rank": 0.5, "ranks": 3})
    with pytest.raises(CompressError, match="not valid JSON"):
        Recipe.from_json("{rank: 0.5")
    with pytest.raises(CompressError, match="JSON object"):
        Recipe.from_json("[1, 2]")


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e309"])
def test_json_nan_and_infinity_are_one_line_naming_the_field_for_every_number_kind(text):
    """Python's json reads NaN, Infinity and 1e309 (int() of them raises ValueError / OverflowError): every field that
    takes a number says what it takes instead, from a recipe.json or a link alike."""
    kinds = {f.kind: name for name, f in FIELDS.items()}
    for kind in ("count", "counts", "int", "fraction", "float"):
        name = kinds[kind]
        value = f"[{text}]" if kind == "counts" else text
        with pytest.raises(CompressError, match=f"^{name} must be"):
            Recipe.from_json(f'{{"{name}": {value}}}')
        with pytest.raises(CompressError, match=f"^{name} must be"):
            Recipe.from_params({name: text.lower().replace("infinity", "inf")})


def test_a_healing_cut_short_says_how_far_it_got():
    """The result's title, the line beside Apply and History say what ran: 19 of 60 steps by the time cap, or a Stop
    at step 6 that kept the unhealed model; a healing that ran every step reads as the recipe does."""
    r = Recipe(layers=3, heal_steps=60)
    assert r.ran({}) == r.describe() == "3 layers, healed 60 steps"
    assert r.ran({"heal": {"steps_run": 60, "best_step": 60, "ended": "done"}}) == r.describe()
    assert r.ran({"heal": {"steps_run": 19, "best_step": 19, "ended": "time cap"}}) == \
        "3 layers, healed 19 of 60 steps (time cap)"
    assert r.ran({"heal": {"steps_run": 6, "best_step": 0, "ended": "Stop"}}) == \
        "3 layers, healed 6 of 60 steps (Stop, the unhealed model kept)"
    for card in ("healed", None, [1], {"steps_run": 1e400}, {"steps_run": True}, {"steps_run": -3}):  # a card's: any
        assert r.ran({"heal": card}) == r.describe()
    assert r.ran({"heal": {"steps_run": 5, "best_step": 5, "ended": "<script>x</script>"}}) == \
        "3 layers, healed 5 of 60 steps (stopped)"  # its words are ours, never the card's


def test_a_rank_at_which_no_layer_is_factorized_says_so():
    """Above the break-even rank every layer stays dense (the result is 1.00x smaller): the title says why, with a
    healing cut short still said; a rank that factorized some layer, or another step's recipe, reads as it is."""
    r = Recipe(rank_mode="ratio", rank=0.9, heal_steps=60)
    said = r.ran({"factorized": [0, 24]})
    assert said.startswith(r.describe()) and "no layer factorized" in said
    assert "healed 7 of 60 steps (Stop)" in r.ran({"factorized": [0, 24], "heal": {"steps_run": 7, "best_step": 7,
                                                                                  "ended": "Stop"}})
    assert r.ran({"factorized": [3, 24]}) == r.ran({}) == r.describe()
    assert Recipe(layers=3).ran({"factorized": [0, 24]}) == "3 layers"
    for odd in ("0 of 24", None, [], [None], {"0": 1}):
        assert r.ran({"factorized": odd}) == r.describe()
    assert r.ran(None) == r.ran([1]) == r.describe()


@pytest.mark.parametrize("field, text", [("layers", "1_0"), ("window", "３２"), ("heads", "٣"), ("heads", "4,4_0"),
                                         ("ffn", "1e-320"), ("ffn", "0x1p-2"), ("rank", "½")])
def test_a_links_numbers_are_plain_ascii_numbers_in_range(field, text):
    """int() and float() also read '1_0' as 10 and other scripts' digits: a link says what it does, as written."""
    with pytest.raises(CompressError, match=f"{field} must be"):
        FIELDS[field].parse(text)
    assert FIELDS["layers"].parse(" 3 ") == 3 and FIELDS["ffn"].parse(".5") == 0.5
    assert FIELDS["rank"].parse("1e-3") == 1e-3 and FIELDS["heads"].parse("4,4,2") == (4, 4, 2)
