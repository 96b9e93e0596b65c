from __future__ import annotations

import pytest

from app.errors import GatewayError
from app.params import parse_list, parse_session_params


def parse(**params: str | list[str]):
    multi = {k: v if isinstance(v, list) else [v] for k, v in params.items()}
    return parse_session_params(multi, default_model="local.tiny.en")


def test_defaults_follow_the_contract() -> None:
    req = parse()
    assert req.model == "local.tiny.en"
    assert req.output_format == "text"
    assert req.options.language == "en"
    assert req.options.sample_rate == 16000
    assert req.options.punctuation is True
    assert req.options.interim_results is False
    assert parse(output_format="verbose_json").options.interim_results is True


@pytest.mark.parametrize("value,expected", [("TRUE", True), ("0", False), ("yes", True),
                                            ("No", False), ("1", True), ("false", False)])
def test_booleans_accept_every_spelling(value: str, expected: bool) -> None:
    assert parse(diarization=value).options.diarization is expected


@pytest.mark.parametrize("name,value", [
    ("sample_rate", "7999"), ("sample_rate", "48001"), ("sample_rate", "16k"),
    ("temperature", "1.5"), ("temperature", "hot"), ("speakers_expected", "0"),
    ("speakers_expected", "11"), ("output_format", "xml"), ("language", "english!"),
    ("punctuation", "maybe"), ("encoding", "opus"), ("model", "tiny"),
    ("fallback", "nodot"),
])
def test_bad_values_close_4400_naming_the_parameter(name: str, value: str) -> None:
    with pytest.raises(GatewayError) as info:
        parse(**{name: value})
    assert info.value.close_code == 4400
    assert name in info.value.message


def test_custom_vocabulary_three_spellings() -> None:
    assert parse_list(["a", "b c"]) == ("a", "b c")
    assert parse_list(['["alpha", "beta gamma"]']) == ("alpha", "beta gamma")
    assert parse_list(["x, y ,z"]) == ("x", "y", "z")
    assert parse(custom_vocabulary=["Speechgate", "soxr"]).options.custom_vocabulary == (
        "Speechgate", "soxr")


def test_unknown_parameters_are_reported_not_fatal() -> None:
    req = parse(colour="blue", api_key="x")
    assert req.unknown_params == ("colour",)


def test_text_format_never_carries_partials() -> None:
    assert parse(output_format="text", interim_results="true").options.interim_results is False
    assert parse(output_format="json", interim_results="true").options.interim_results is True
