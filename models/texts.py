"""Built-in multilingual sentences (English, Korean, Russian): what the INT8 report judges a quantized
model on, and what compact output types (int8/uint8 embeddings) calibrate their ranges on."""

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
