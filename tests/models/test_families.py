"""models.families is the one home of a model family: each model type has one family, and an unknown
one gets a family that supports only what every model does."""

from __future__ import annotations

from types import SimpleNamespace

from embedserve.models.families import FAMILIES, Family, family_of, position_limit


def test_each_model_type_and_name_belongs_to_one_family() -> None:
    types = [model_type for family in FAMILIES for model_type in family.model_types]
    assert len(types) == len(set(types))
    assert len({family.name for family in FAMILIES}) == len(FAMILIES)


def test_a_model_type_gets_its_family() -> None:
    for family in FAMILIES:
        assert all(family_of(model_type) is family for model_type in family.model_types)


def test_an_unknown_model_type_gets_the_plain_family() -> None:
    assert family_of("t5") == Family("t5", ("t5",))
    plain = family_of(None)
    assert plain.name == "unknown" and plain.packed is None and plain.classifiers == ()
    assert plain.float16 and plain.position_offset == 0 and plain.onnx_fusions is None


def test_every_family_that_packs_names_a_packed_runner() -> None:
    from embedserve.models.packed_encoder import RUNNERS

    assert {family.packed for family in FAMILIES if family.packed} <= set(RUNNERS)


def test_packed_classifiers_belong_to_one_family_that_packs() -> None:
    import transformers

    names = [name for family in FAMILIES for name in family.classifiers]
    assert len(names) == len(set(names))
    for family in FAMILIES:
        assert family.packed or not family.classifiers, family.name
        assert family.classifiers or not family.classifier_pooler, family.name
        for name in family.classifiers:  # a transformers class whose config is of the family
            assert getattr(transformers, name).config_class.model_type in family.model_types, name


def test_the_position_limit_leaves_out_the_familys_offset() -> None:
    assert position_limit(SimpleNamespace(model_type="xlm-roberta", max_position_embeddings=514)) == 512
    assert position_limit(SimpleNamespace(model_type="bert", max_position_embeddings=512)) == 512
    assert position_limit(SimpleNamespace(model_type="bert")) is None
