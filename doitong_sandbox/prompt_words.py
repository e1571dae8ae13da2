"""What a prompt asks the sandbox to paint: scene cues and palettes, read from its words.

The vocabularies are English. A Korean prompt reads as its English counterpart does: each Hangul token is taken
for the English word of the stem it begins with, because Korean attaches particles to nouns (도시의, 바다에서).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# word -> (palette, weight); a weak word only decides when no strong one is present.
PALETTE_WORDS: dict[str, tuple[str, float]] = {
    **dict.fromkeys(("neon", "night", "nights", "midnight", "cyberpunk", "synthwave"), ("neon", 1.0)),
    **dict.fromkeys(("city", "cities", "urban", "downtown"), ("neon", 0.5)),
    **dict.fromkeys(
        ("sunset", "sunsets", "sunrise", "dusk", "fire", "fires", "flame", "flames", "lava"),
        ("sunset", 1.0),
    ),
    **dict.fromkeys(("autumn", "orange", "golden", "volcano"), ("sunset", 0.5)),
    **dict.fromkeys(("forest", "forests", "green", "jungle", "woods", "trees", "leaves", "moss"), ("forest", 1.0)),
    **dict.fromkeys(("meadow", "tree", "grass"), ("forest", 0.5)),
    **dict.fromkeys(("ocean", "oceans", "sea", "seas", "water", "waves", "underwater", "lake"), ("ocean", 1.0)),
    **dict.fromkeys(("beach", "river", "blue", "coast"), ("ocean", 0.5)),
    **dict.fromkeys(
        ("snow", "snowy", "winter", "ice", "icy", "frozen", "frost", "glacier", "arctic"),
        ("snow", 1.0),
    ),
    **dict.fromkeys(("desert", "deserts", "sand", "sandy", "dune", "dunes", "sahara"), ("desert", 1.0)),
    **dict.fromkeys(("canyon",), ("desert", 0.5)),
    **dict.fromkeys(("space", "galaxy", "galaxies", "nebula", "cosmic", "cosmos"), ("cosmic", 1.0)),
    **dict.fromkeys(("universe", "planet", "planets", "star", "stars", "starry"), ("cosmic", 0.5)),
}

CUE_WORDS: dict[str, tuple[str, ...]] = {
    "city": (
        "city",
        "cities",
        "building",
        "buildings",
        "skyline",
        "skyscraper",
        "skyscrapers",
        "downtown",
        "metropolis",
        "urban",
        "street",
        "towers",
    ),
    "mountain": ("mountain", "mountains", "mountainous", "ridge", "ridges", "peak", "peaks", "alps"),
    "ocean": ("ocean", "oceans", "sea", "seas", "water", "waves", "wave", "beach", "lake", "coast"),
    "space": ("space", "star", "stars", "starry", "galaxy", "galaxies", "nebula", "cosmos", "cosmic"),
    "figure": (
        "portrait",
        "face",
        "person",
        "man",
        "woman",
        "girl",
        "boy",
        "figure",
        "character",
        "astronaut",
        "selfie",
    ),
    "flying": (
        "flying",
        "car",
        "cars",
        "drone",
        "drones",
        "spaceship",
        "spaceships",
        "ufo",
        "birds",
        "plane",
        "planes",
        "airship",
    ),
    "forest": ("forest", "forests", "trees", "woods", "jungle", "pine", "pines"),
    "dunes": ("desert", "deserts", "dune", "dunes", "sand", "sahara"),
    "hills": ("field", "fields", "meadow", "hill", "hills", "valley", "landscape", "countryside"),
    "snowfall": ("snow", "snowy", "winter", "blizzard", "snowfall", "snowing", "snowflakes"),
    "sun": ("sunset", "sunrise", "sun", "sunny", "dusk", "dawn", "fire"),
    "moon": ("moon", "moonlight", "moonlit", "night"),
}

# Hangul stem -> the English word above that it stands for. Korean nouns name one or many alike, so a stem
# stands for the plural where English tells them apart (나무: trees, a forest; "tree" alone paints none).
# Left out as too often something else: 해 (sun; also forms of 하다 "do"), 새 (bird; also "new"), 차 (car; also
# "tea"), 코스모스 (the flower more often than the cosmos), and words English has no entry for (남극).
_KOREAN_WORDS: dict[str, str] = {
    # neon, night, city
    "네온": "neon",
    "밤": "night",
    "밤하늘": "night",
    "야경": "night",
    "야간": "night",
    "한밤": "midnight",
    "자정": "midnight",
    "사이버펑크": "cyberpunk",
    "신스웨이브": "synthwave",
    "도시": "city",
    "대도시": "metropolis",
    "도심": "downtown",
    "시내": "downtown",
    "건물": "buildings",
    "빌딩": "buildings",
    "스카이라인": "skyline",
    "마천루": "skyscrapers",
    "고층": "skyscrapers",
    "거리": "street",
    "타워": "towers",
    "탑": "towers",
    # sunset, fire
    "노을": "sunset",
    "석양": "sunset",
    "일몰": "sunset",
    "해넘이": "sunset",
    "일출": "sunrise",
    "해돋이": "sunrise",
    "황혼": "dusk",
    "해질녘": "dusk",
    "새벽": "dawn",
    "여명": "dawn",
    "태양": "sun",
    "햇살": "sunny",
    "햇빛": "sunny",
    "불": "fire",
    "불꽃": "flame",
    "화염": "flame",
    "용암": "lava",
    "가을": "autumn",
    "단풍": "autumn",
    "주황": "orange",
    "오렌지": "orange",
    "황금": "golden",
    "금빛": "golden",
    "화산": "volcano",
    # forest, fields
    "숲": "forest",
    "숲속": "forest",
    "삼림": "forests",
    "산림": "forests",
    "초록": "green",
    "녹색": "green",
    "정글": "jungle",
    "밀림": "jungle",
    "나무": "trees",
    "소나무": "pines",
    "잎": "leaves",
    "잎사귀": "leaves",
    "나뭇잎": "leaves",
    "이끼": "moss",
    "풀": "grass",
    "잔디": "grass",
    "초원": "meadow",
    "풀밭": "meadow",
    "들판": "field",
    "벌판": "field",
    "언덕": "hills",
    "구릉": "hills",
    "계곡": "valley",
    "골짜기": "valley",
    "풍경": "landscape",
    "시골": "countryside",
    # water
    "바다": "sea",
    "대양": "ocean",
    "해양": "ocean",
    "물": "water",
    "물속": "underwater",
    "바닷속": "underwater",
    "수중": "underwater",
    "파도": "waves",
    "물결": "waves",
    "호수": "lake",
    "해변": "beach",
    "바닷가": "beach",
    "백사장": "beach",
    "해안": "coast",
    "강": "river",
    "파란": "blue",
    "파랑": "blue",
    # snow, ice
    "눈": "snow",
    "눈밭": "snowy",
    "설경": "snowy",
    "설원": "snowy",
    "눈보라": "blizzard",
    "눈송이": "snowflakes",
    "함박눈": "snowfall",
    "겨울": "winter",
    "얼음": "ice",
    "빙판": "ice",
    "얼어": "frozen",
    "서리": "frost",
    "빙하": "glacier",
    "북극": "arctic",
    # desert
    "사막": "desert",
    "모래": "sand",
    "사구": "dunes",
    "사하라": "sahara",
    "협곡": "canyon",
    # space
    "우주": "space",
    "은하": "galaxy",
    "성운": "nebula",
    "행성": "planets",
    "별": "stars",
    "별빛": "starry",
    "달": "moon",
    "달빛": "moonlight",
    "달밤": "moonlit",
    # mountains
    "산": "mountains",
    "산속": "mountains",
    "산맥": "mountains",
    "산악": "mountainous",
    "봉우리": "peaks",
    "산봉우리": "peaks",
    "능선": "ridge",
    "산등성이": "ridge",
    "알프스": "alps",
    # figures
    "초상": "portrait",
    "인물": "figure",
    "얼굴": "face",
    "사람": "person",
    "인간": "person",
    "남자": "man",
    "남성": "man",
    "여자": "woman",
    "여성": "woman",
    "소녀": "girl",
    "소년": "boy",
    "캐릭터": "character",
    "우주비행사": "astronaut",
    "셀카": "selfie",
    # things that fly
    "날아": "flying",
    "비행": "flying",
    "자동차": "cars",
    "드론": "drones",
    "우주선": "spaceships",
    "비행접시": "ufo",
    "비행기": "planes",
    "비행선": "airship",
    "새들": "birds",
    "새떼": "birds",
}
_KOREAN_STEMS = sorted(_KOREAN_WORDS, key=len, reverse=True)  # longest first: 우주비행사 before 우주, 산맥 before 산
# A stem of one syllable begins unrelated words (불빛 "light", 산책 "a walk", 별장 "a villa", 눈물 "tears",
# 강아지 "a puppy"), so it counts only alone or before a plural 들 and particles (산에서, 별들의, 밤에는);
# longer stems count at the start of any token (바다에서, 도시적인). 눈 is read as snow, never "eye": the two
# are one word, and prompts that say 눈 mostly say 눈 덮인 or 눈 내리는.
_PARTICLES = re.compile(r"들?(?:에서|에게|으로|처럼|까지|보다|이나|[의은는이가을를에로와과도만])?[는도의]?")
_TOKEN = re.compile(r"[a-z]+|[가-힣]+")


@dataclass(frozen=True)
class PromptReading:
    """What a prompt asks of the picture: the scene's elements and its palettes."""

    cues: frozenset[str]  # keys of CUE_WORDS
    palettes: tuple[str, ...]  # palette names, best first (ties in prompt order); none: a palette from the hash


def read_prompt(prompt: str) -> PromptReading:
    """The cues and palettes a prompt's words ask for, English and Korean alike."""
    words = _words(prompt)
    cues = frozenset(cue for cue, vocab in CUE_WORDS.items() if any(t in vocab for t in words))
    scores: dict[str, float] = {}
    for word in words:
        if word in PALETTE_WORDS:
            name, weight = PALETTE_WORDS[word]
            scores[name] = scores.get(name, 0.0) + weight
    return PromptReading(cues, tuple(sorted(scores, key=lambda name: -scores[name])))  # stable: ties keep order


def _words(prompt: str) -> list[str]:
    """The prompt's words in the vocabularies' language, in prompt order: English as written, Hangul by its stem."""
    words = []
    for token in _TOKEN.findall(prompt.lower()):
        if token.isascii():
            words.append(token)
        elif (word := _korean_word(token)) is not None:
            words.append(word)
    return words


def _korean_word(token: str) -> str | None:
    """The English word a Hangul token stands for, by the longest known stem it begins with."""
    for stem in _KOREAN_STEMS:
        if token.startswith(stem) and (len(stem) > 1 or _PARTICLES.fullmatch(token, len(stem))):
            return _KOREAN_WORDS[stem]
    return None
