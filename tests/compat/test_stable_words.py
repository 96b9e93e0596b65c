"""``stable_words`` on the native json/verbose_json partials: the stabilizer serving our own
format. Real speech through the local engine at real-time pace (the way partials arise)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from app.stabilizer import norm
from tests.servers import Gateway
from tests.speech import pcm
from tests.wsclient import transcribe


async def test_stable_words_only_grow_and_match_the_final(gateway: Gateway) -> None:
    result = await transcribe(gateway.ws_url, pcm("beckett.wav"), key=gateway.dev_key,
                              params={"output_format": "verbose_json"}, realtime_rate=16000)
    segments: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in result.of_type("transcript"):
        segments[t["segment_id"]].append(t)
    partials = [t for t in result.of_type("transcript") if not t["is_final"]]
    assert partials and all("stable_words" in t for t in partials)
    for events in segments.values():
        final = events[-1]
        assert final["is_final"] and final["stable_words"] == len(final["text"].split())
        previous = 0
        for t in events[:-1]:
            words = t["text"].split()
            assert previous <= t["stable_words"] <= max(len(words) - 1, 0)
            previous = t["stable_words"]
            shown = [norm(w) for w in words[:t["stable_words"]]]
            assert shown == [norm(w) for w in final["text"].split()][:len(shown)], (t, final)
