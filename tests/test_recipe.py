import pytest

from compress import CompressError, Recipe


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
    ({"rank": 0}, "(0, 1]"),
    ({"rank": 1.5}, "(0, 1]"),
    ({"rank": -0.2}, "(0, 1]"),
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
