"""Built-in multilingual texts: export verification and the INT8 accuracy report run on these, so
a quantized model is judged on English, Korean and Russian, not just the language it was tuned on."""

from __future__ import annotations

SENTENCES: tuple[str, ...] = (
    # English
    "A man is eating a piece of bread.",
    "The new movie is awesome and the actors were great.",
    "How do I reset my password if I forgot the old one?",
    "Quantum computers use qubits that can be in superposition.",
    "The stock market fell sharply after the announcement.",
    "She plays the violin in the city orchestra every Friday.",
    "Heavy rain is expected across the north of the country tomorrow.",
    "Photosynthesis converts sunlight, water and carbon dioxide into sugar.",
    "Please send the invoice to the accounting department by Monday.",
    "The cat knocked a glass of water off the kitchen table.",
    "Our API returns a 429 status code when you exceed the rate limit.",
    "Mount Everest is the highest mountain above sea level.",
    "what is the capital of france",
    # Korean
    "한 남자가 빵을 먹고 있다.",
    "새 영화는 정말 재미있었고 배우들의 연기도 훌륭했다.",
    "비밀번호를 잊어버렸을 때 어떻게 재설정하나요?",
    "양자 컴퓨터는 중첩 상태에 있을 수 있는 큐비트를 사용한다.",
    "발표 이후 주식 시장이 급락했다.",
    "그녀는 매주 금요일 시립 오케스트라에서 바이올린을 연주한다.",
    "내일은 전국 북부 지역에 많은 비가 예상됩니다.",
    "광합성은 햇빛과 물과 이산화탄소를 당으로 바꾼다.",
    "월요일까지 회계 부서로 청구서를 보내 주세요.",
    "고양이가 부엌 식탁에서 물컵을 떨어뜨렸다.",
    "서울에서 부산까지 기차로 얼마나 걸리나요?",
    "에베레스트 산은 해발 고도가 가장 높은 산이다.",
    # Russian
    "Мужчина ест кусок хлеба.",
    "Новый фильм потрясающий, а актёры сыграли великолепно.",
    "Как сбросить пароль, если я забыл старый?",
    "Квантовые компьютеры используют кубиты, которые могут находиться в суперпозиции.",
    "После объявления фондовый рынок резко упал.",
    "Она играет на скрипке в городском оркестре каждую пятницу.",
    "Завтра на севере страны ожидаются сильные дожди.",
    "Фотосинтез превращает солнечный свет, воду и углекислый газ в сахар.",
    "Пожалуйста, отправьте счёт в бухгалтерию до понедельника.",
    "Кошка сбросила стакан воды с кухонного стола.",
    "Сколько времени занимает поездка на поезде из Москвы в Санкт-Петербург?",
    "Эверест — самая высокая гора над уровнем моря.",
)

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
