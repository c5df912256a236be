"""Built-in multilingual texts: export verification and the INT8 accuracy report run on these, so
a quantized model is judged on English, Korean and Russian, not just the language it was tuned on."""

from __future__ import annotations

from embedserve.models.texts import SENTENCES  # noqa: E402  (their home: models, which quantize builds on)

# (query, documents): the first document answers the query, the others are near or far misses.
RERANK_SETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "what is the capital of France?",
        (
            "Paris is the capital and largest city of France.",
            "France is famous for its wine and cheese.",
            "Berlin is the capital of Germany.",
            "The Eiffel Tower was completed in 1889.",
            "Bread is usually made from flour, water and yeast.",
        ),
    ),
    (
        "how do I reset a forgotten password?",
        (
            "Click 'Forgot password' on the sign-in page and follow the link we email you.",
            "Strong passwords mix letters, digits and symbols.",
            "Our office is closed on public holidays.",
            "Two-factor authentication adds a second step to signing in.",
            "The cat knocked a glass of water off the table.",
        ),
    ),
    (
        "서울에서 부산까지 기차로 얼마나 걸리나요?",
        (
            "KTX 고속열차로 서울에서 부산까지 약 두 시간 반이 걸립니다.",
            "부산은 한국에서 두 번째로 큰 도시입니다.",
            "서울의 지하철은 매우 편리합니다.",
            "제주도는 비행기로 가는 것이 가장 빠릅니다.",
            "김치는 배추로 만든 한국의 전통 음식입니다.",
        ),
    ),
    (
        "광합성은 무엇인가요?",
        (
            "광합성은 식물이 빛 에너지를 이용해 이산화탄소와 물로 포도당을 만드는 과정이다.",
            "식물은 물과 햇빛이 필요하다.",
            "동물은 산소를 들이마시고 이산화탄소를 내뱉는다.",
            "컴퓨터는 전기로 작동한다.",
            "내일은 비가 올 예정입니다.",
        ),
    ),
    (
        "Какая самая высокая гора в мире?",
        (
            "Эверест высотой 8849 метров — самая высокая гора над уровнем моря.",
            "Эльбрус — самая высокая вершина Европы.",
            "Горы покрывают около четверти поверхности суши.",
            "Москва — столица России.",
            "Кошка спит на подоконнике.",
        ),
    ),
    (
        "Как сбросить пароль?",
        (
            "Нажмите «Забыли пароль?» на странице входа и перейдите по ссылке из письма.",
            "Надёжный пароль содержит буквы, цифры и символы.",
            "Двухфакторная аутентификация добавляет второй шаг при входе.",
            "Наш офис не работает в праздничные дни.",
            "Фотосинтез превращает солнечный свет в энергию.",
        ),
    ),
)


def language(text: str) -> str:
    """`ko`, `ru` or `en` by script: enough to break the built-in figures down by language."""
    if any("\uac00" <= ch <= "\ud7a3" for ch in text):
        return "ko"
    if any("\u0400" <= ch <= "\u04ff" for ch in text):
        return "ru"
    return "en"


def rerank_pairs() -> list[tuple[str, str]]:
    """Every (query, document) pair of the built-in rerank sets, set by set."""
    return [(query, doc) for query, docs in RERANK_SETS for doc in docs]


def long_text(min_words: int) -> str:
    """A multilingual text of at least `min_words` words: exercises truncation, and attention over
    long spans (sliding windows) that short sentences never reach."""
    words: list[str] = []
    i = 0
    while len(words) < min_words:
        words.extend(SENTENCES[i % len(SENTENCES)].split())
        i += 1
    return " ".join(words)
