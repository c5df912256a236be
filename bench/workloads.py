"""Deterministic benchmark texts, generated from a seed and a built-in vocabulary.

Built-in so a benchmark needs no downloads and every run (and the in-process ceiling) sees
byte-identical inputs. Lengths are what matter to an embedding server: `short` texts look like
search queries (4-12 words), `long` ones like passages (120-300 words, past MiniLM's 256-token
limit at the top end, so truncation is exercised), `mixed` is mostly queries with ~15% passages, and
`zipf` is `short` queries that repeat as search traffic does (Zipf, s = 1.1, over 10k distinct ones):
what a response cache is measured on.
"""

from __future__ import annotations

import random

NOUNS = """
account address answer apple article battery bicycle bird book bottle bridge budget camera car
card castle chair chart city cloud coffee computer contract country customer data database design
device dinner doctor door engine error event factory family farm file film flight flower forest
garden glass government guitar hospital hotel house idea image insurance island job kitchen lake
language laptop law letter library light machine map market meeting memory message model money
mountain movie music network newspaper ocean office oven paper password payment phone piano picture
plane planet plant policy price printer problem process product program project question recipe
report restaurant river road room school screen server ship shoe shop software song station
student study system table teacher team test ticket tool tower town train tree university vacation
video village wallet water weather website window winter worker
""".split()

VERBS = """
build buy change choose clean compare connect cook create delete design download drive explain find
fix grow improve install learn manage measure move open order plan print protect read reduce remove
repair replace reset run save sell send share sort start stop store test train travel update upgrade
use visit wash watch write
""".split()

ADJECTIVES = """
affordable ancient annual best big bright cheap classic cold comfortable common dark digital early
easy electric fast free fresh green healthy heavy hidden important large late light local long
modern natural new old online open popular portable private public quick quiet rare safe secure
simple slow small smart soft strong sweet traditional useful warm wireless young
""".split()

FUNCTION_WORDS = """
the the the a a an and and or but of of of to to in in on for with with by from at as that this
these which when while because after before during about into over under between without is is
are was were has have had will can should may it its their our they we you he she not also very
more most some many each every other such than then there
""".split()

QUERY_PREFIXES = (
    "how to",
    "what is",
    "best",
    "why does",
    "where to buy",
    "how much does",
    "can i",
    "difference between",
    "cheapest",
    "when should i",
)

WORKLOADS = ("short", "long", "mixed", "zipf")
LONG_SHARE = 0.15  # share of passages in `mixed`
ZIPF_DISTINCT = 10_000  # `zipf`: short queries drawn with repeats from this many distinct ones
ZIPF_EXPONENT = 1.1  # P(the k-th most popular query) ∝ 1 / k^1.1, as search traffic repeats itself


def _query(rng: random.Random) -> str:
    words: list[str] = []
    if rng.random() < 0.4:
        words.extend(rng.choice(QUERY_PREFIXES).split())
    target = rng.randint(4, 12)
    while len(words) < target:
        words.append(rng.choice(rng.choice((NOUNS, NOUNS, VERBS, ADJECTIVES))))  # queries are noun-heavy
    return " ".join(words[:target])


def _sentence(rng: random.Random, length: int) -> str:
    words = [
        rng.choice(FUNCTION_WORDS) if rng.random() < 0.4 else rng.choice(rng.choice((NOUNS, VERBS, ADJECTIVES)))
        for _ in range(length)
    ]
    if length > 10 and rng.random() < 0.5:
        words[rng.randrange(3, length - 3)] += ","
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def _passage(rng: random.Random) -> str:
    remaining = rng.randint(120, 300)
    sentences: list[str] = []
    while remaining > 0:
        length = min(remaining, rng.randint(8, 20))
        sentences.append(_sentence(rng, length))
        remaining -= length
    return " ".join(sentences)


def generate(workload: str, size: int, seed: int = 0) -> list[str]:
    """`size` texts of the named workload; the same (workload, size, seed) always gives the same list."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
    rng = random.Random(f"{workload}:{seed}")
    if workload == "short":
        return [_query(rng) for _ in range(size)]
    if workload == "long":
        return [_passage(rng) for _ in range(size)]
    if workload == "zipf":
        distinct = [_query(rng) for _ in range(ZIPF_DISTINCT)]
        weights = [1 / rank**ZIPF_EXPONENT for rank in range(1, ZIPF_DISTINCT + 1)]
        return rng.choices(distinct, weights=weights, k=size)
    return [_passage(rng) if rng.random() < LONG_SHARE else _query(rng) for _ in range(size)]
