"""Issue 21: a Korean prompt chooses the scene and palette of its English counterpart (doitong_sandbox.prompt_words)."""

from __future__ import annotations

import pytest

from doitong_sandbox.prompt_words import read_prompt


@pytest.mark.parametrize(
    ("korean", "english"),
    [
        ("네온 불빛의 미래 도시", "a neon city of the future"),  # 불빛 is light, not 불 "fire"
        ("하늘을 나는 자동차가 있는 네온 도시", "a neon city with flying cars"),
        ("한밤중의 사이버펑크 거리", "a cyberpunk street at midnight"),
        ("노을 지는 바다", "sunset over the sea"),
        ("해변에 부서지는 파도", "waves breaking on the beach"),
        ("얼어붙은 호수의 겨울 아침", "a frozen lake on a winter morning"),
        ("눈 덮인 산봉우리", "snowy mountain peaks"),
        ("숲속의 키 큰 소나무들", "tall pines in a forest"),
        ("사막의 모래언덕", "desert sand dunes"),
        ("별이 가득한 우주의 은하", "a galaxy in space full of stars"),
        ("우주비행사의 초상", "portrait of an astronaut"),  # the longest stem: not 우주 "space"
        ("용암이 흐르는 화산", "lava flowing from a volcano"),
        ("neon 도시", "neon city"),  # English and Hangul in one prompt
    ],
)
def test_a_korean_prompt_reads_as_its_english_counterpart(korean: str, english: str) -> None:
    reading = read_prompt(korean)
    assert reading == read_prompt(english)
    assert reading.cues or reading.palettes  # a counterpart that reads as nothing would prove nothing


@pytest.mark.parametrize(
    ("stem", "endings"),
    [
        ("도시", ("의", "에서", "로", "적인")),
        ("바다", ("에서", "의", "와", "는")),
        ("숲", ("속", "속에서", "을", "의")),
        ("산", ("에서", "이", "들의", "에는")),
        ("별", ("들", "이", "들이", "처럼")),
        ("밤", ("에", "의", "에는", "하늘")),
        ("눈", ("이", "으로", "은", "도")),
    ],
)
def test_particles_after_a_stem_change_nothing(stem: str, endings: tuple[str, ...]) -> None:
    alone = read_prompt(stem)
    assert alone.cues or alone.palettes
    assert [read_prompt(stem + ending) for ending in endings] == [alone] * len(endings)


@pytest.mark.parametrize(
    "unrelated",
    [
        "불빛",  # light, not 불 "fire"
        "불가능한",  # impossible
        "산책하는",  # taking a walk, not 산 "mountain"
        "별장",  # a villa, not 별 "star"
        "눈물",  # tears, not 눈 "snow"
        "강아지",  # a puppy, not 강 "river"
        "물감",  # paint, not 물 "water"
        "달콤한",  # sweet, not 달 "moon"
        "미래의 안녕하세요",
    ],
)
def test_a_hangul_word_that_only_begins_like_a_stem_is_not_taken_for_it(unrelated: str) -> None:
    assert read_prompt(unrelated) == read_prompt("")
