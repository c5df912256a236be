"""The multilingual evaluation set the INT8 gate judges by: written for embedserve, not copied.

35 topics, each with a short English query and one sentence in eight languages (English, German,
Spanish, Russian, Arabic, Chinese, Japanese, Korean) saying much the same thing, so the set has
neighbours to retrieve; then 24 code snippets, 24 very short texts, and one long text per language
that runs past a 256-token window: 371 texts. `eval_texts()` is the flat list, `language()` names
each text's group, `rerank_sets()` builds query/document lists for cross-encoders from the topics.
"""

from __future__ import annotations

from functools import cache

LANGUAGES = ("en", "de", "es", "ru", "ar", "zh", "ja", "ko")

# (query, {language: sentence}) in the order of LANGUAGES.
TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "how long does bread dough need to rise?",
        (
            "Bread dough usually needs one to two hours in a warm place to double in size.",
            "Brotteig braucht an einem warmen Ort meist ein bis zwei Stunden, bis er sich verdoppelt hat.",
            "La masa de pan suele necesitar entre una y dos horas en un lugar cálido para duplicar su tamaño.",
            "Хлебному тесту обычно нужно от одного до двух часов в тёплом месте, чтобы увеличиться вдвое.",
            "تحتاج عجينة الخبز عادةً من ساعة إلى ساعتين في مكان دافئ حتى يتضاعف حجمها.",
            "面团通常需要在温暖的地方发酵一到两个小时，体积才会变成两倍。",
            "パン生地は暖かい場所で一、二時間ほど置くと、二倍の大きさに膨らみます。",
            "빵 반죽은 따뜻한 곳에서 보통 한두 시간 두면 부피가 두 배로 부풀어요.",
        ),
    ),
    (
        "when does the last train leave the station?",
        (
            "The last train to the city centre leaves platform four at 11:40 pm.",
            "Der letzte Zug ins Stadtzentrum fährt um 23:40 Uhr von Gleis vier ab.",
            "El último tren al centro sale del andén cuatro a las 23:40.",
            "Последний поезд в центр города отправляется с четвёртой платформы в 23:40.",
            "يغادر آخر قطار إلى وسط المدينة من الرصيف الرابع في الساعة 11:40 مساءً.",
            "开往市中心的末班车晚上十一点四十分从四号站台发车。",
            "都心行きの最終電車は午後十一時四十分に四番線から発車します。",
            "시내로 가는 막차는 밤 11시 40분에 4번 승강장에서 출발합니다.",
        ),
    ),
    (
        "symptoms of dehydration",
        (
            "Headache, dizziness and dark urine are common signs that you are not drinking enough water.",
            "Kopfschmerzen, Schwindel und dunkler Urin sind typische Zeichen dafür, dass man zu wenig trinkt.",
            "El dolor de cabeza, el mareo y la orina oscura indican a menudo que no bebes suficiente agua.",
            "Головная боль, головокружение и тёмная моча — частые признаки того, что вы пьёте слишком мало воды.",
            "الصداع والدوخة والبول الداكن علامات شائعة على أنك لا تشرب ما يكفي من الماء.",
            "头痛、头晕和尿色发深，往往说明你喝水不够。",
            "頭痛やめまい、濃い色の尿は、水分が足りていないというよくあるサインです。",
            "두통, 어지럼증, 진한 색의 소변은 물을 충분히 마시지 않았다는 흔한 신호예요.",
        ),
    ),
    (
        "how to reset my router",
        (
            "Hold the reset button on the back of the router for ten seconds until the lights blink.",
            "Halten Sie die Reset-Taste auf der Rückseite des Routers zehn Sekunden lang gedrückt, bis die Lampen blinken.",
            "Mantén pulsado el botón de reinicio de la parte trasera del router durante diez segundos hasta que parpadeen las luces.",
            "Удерживайте кнопку сброса на задней панели роутера десять секунд, пока не замигают индикаторы.",
            "اضغط مع الاستمرار على زر إعادة الضبط في الجهة الخلفية من الراوتر لمدة عشر ثوانٍ حتى تومض الأضواء.",
            "按住路由器背面的复位键十秒钟，直到指示灯开始闪烁。",
            "ルーター背面のリセットボタンを、ランプが点滅するまで十秒間押し続けてください。",
            "공유기 뒷면의 초기화 버튼을 불빛이 깜박일 때까지 10초 동안 누르세요.",
        ),
    ),
    (
        "why is the sky blue?",
        (
            "Sunlight scatters off air molecules, and blue light scatters much more than red, so the sky looks blue.",
            "Sonnenlicht wird an Luftmolekülen gestreut, blaues Licht viel stärker als rotes, deshalb erscheint der Himmel blau.",
            "La luz del sol se dispersa en las moléculas del aire y la azul mucho más que la roja, por eso el cielo se ve azul.",
            "Солнечный свет рассеивается на молекулах воздуха, синий сильнее красного, поэтому небо кажется голубым.",
            "يتشتت ضوء الشمس على جزيئات الهواء، والضوء الأزرق أكثر بكثير من الأحمر، لذلك تبدو السماء زرقاء.",
            "阳光被空气分子散射，蓝光比红光散射得多，所以天空看起来是蓝色的。",
            "太陽の光は空気の分子で散乱し、青い光は赤い光よりずっと強く散らばるので、空は青く見えます。",
            "햇빛은 공기 분자에 부딪혀 흩어지는데 파란빛이 붉은빛보다 훨씬 많이 흩어져서 하늘이 파랗게 보입니다.",
        ),
    ),
    (
        "refund policy for online orders",
        (
            "You can return any unused item within thirty days and we will refund the full price.",
            "Unbenutzte Artikel können Sie innerhalb von dreißig Tagen zurückgeben, und wir erstatten den vollen Preis.",
            "Puedes devolver cualquier artículo sin usar en un plazo de treinta días y te reembolsaremos el precio completo.",
            "Любой неиспользованный товар можно вернуть в течение тридцати дней, и мы вернём полную стоимость.",
            "يمكنك إرجاع أي منتج غير مستخدم خلال ثلاثين يومًا وسنعيد إليك المبلغ كاملًا.",
            "未使用的商品可在三十天内退货，我们将全额退款。",
            "未使用の商品は三十日以内であれば返品でき、代金を全額お返しします。",
            "사용하지 않은 상품은 30일 이내에 반품하시면 전액 환불해 드립니다.",
        ),
    ),
    (
        "best time to plant tomatoes",
        (
            "Plant tomato seedlings outside after the last frost, when the soil has warmed up.",
            "Tomatenpflanzen setzt man nach dem letzten Frost ins Freie, wenn der Boden warm geworden ist.",
            "Las plántulas de tomate se trasplantan al exterior después de la última helada, cuando el suelo ya está templado.",
            "Рассаду томатов высаживают в грунт после последних заморозков, когда земля прогреется.",
            "تُزرع شتلات الطماطم في الخارج بعد آخر صقيع، عندما تكون التربة قد دفئت.",
            "等最后一次霜冻过去、土壤变暖以后，再把番茄苗移栽到户外。",
            "トマトの苗は、最後の霜が終わって土が温まってから外に植えます。",
            "토마토 모종은 마지막 서리가 지나고 흙이 따뜻해진 뒤에 밖에 심어요.",
        ),
    ),
    (
        "what does a central bank do?",
        (
            "A central bank sets interest rates and manages the money supply to keep prices stable.",
            "Eine Zentralbank legt die Leitzinsen fest und steuert die Geldmenge, um die Preise stabil zu halten.",
            "Un banco central fija los tipos de interés y gestiona la oferta monetaria para mantener estables los precios.",
            "Центральный банк устанавливает процентные ставки и управляет денежной массой, чтобы цены оставались стабильными.",
            "يحدد البنك المركزي أسعار الفائدة ويدير المعروض النقدي للحفاظ على استقرار الأسعار.",
            "中央银行负责制定利率、调节货币供应，以保持物价稳定。",
            "中央銀行は金利を決め、通貨の供給量を調整して物価を安定させます。",
            "중앙은행은 금리를 정하고 통화량을 조절해 물가를 안정시킵니다.",
        ),
    ),
    (
        "how do vaccines work?",
        (
            "A vaccine trains the immune system to recognise a germ without causing the disease.",
            "Ein Impfstoff bringt dem Immunsystem bei, einen Erreger zu erkennen, ohne die Krankheit auszulösen.",
            "Una vacuna enseña al sistema inmunitario a reconocer un germen sin provocar la enfermedad.",
            "Вакцина учит иммунную систему распознавать возбудителя, не вызывая самой болезни.",
            "يدرّب اللقاح جهاز المناعة على التعرف على الجرثومة دون أن يسبب المرض.",
            "疫苗让免疫系统学会识别病原体，而不会让人真的生病。",
            "ワクチンは、病気を起こさずに病原体を見分けられるよう免疫の仕組みを鍛えます。",
            "백신은 병을 일으키지 않으면서 면역 체계가 병원체를 알아보도록 훈련시킵니다.",
        ),
    ),
    (
        "football match result last night",
        (
            "The home team won the match two to one with a goal in the final minute.",
            "Die Heimmannschaft gewann das Spiel mit zwei zu eins durch ein Tor in der letzten Minute.",
            "El equipo local ganó el partido por dos a uno con un gol en el último minuto.",
            "Хозяева поля выиграли матч со счётом два — один, забив гол на последней минуте.",
            "فاز الفريق المضيف بالمباراة بهدفين مقابل هدف بفضل هدف في الدقيقة الأخيرة.",
            "主队在最后一分钟打进一球，以二比一赢下了比赛。",
            "ホームチームは試合終了間際のゴールで二対一の勝利を収めました。",
            "홈팀이 경기 종료 직전에 골을 넣어 2대 1로 이겼습니다.",
        ),
    ),
    (
        "how to treat a minor burn",
        (
            "Cool a small burn under running water for twenty minutes and do not put butter on it.",
            "Eine kleine Verbrennung zwanzig Minuten unter fließendem Wasser kühlen und keine Butter daraufgeben.",
            "Enfría una quemadura pequeña con agua corriente durante veinte minutos y no le pongas mantequilla.",
            "Небольшой ожог охлаждайте под проточной водой двадцать минут и не мажьте его маслом.",
            "برّد الحرق البسيط تحت الماء الجاري لمدة عشرين دقيقة ولا تضع عليه الزبدة.",
            "轻微烫伤要用流动的冷水冲二十分钟，不要涂黄油。",
            "軽いやけどは流水で二十分ほど冷やし、バターなどは塗らないでください。",
            "가벼운 화상은 흐르는 물에 20분 동안 식히고 버터를 바르지 마세요.",
        ),
    ),
    (
        "apartment for rent near the university",
        (
            "A bright two-room flat five minutes from the campus is available from next month.",
            "Eine helle Zweizimmerwohnung fünf Minuten vom Campus entfernt ist ab nächstem Monat frei.",
            "Se alquila un piso luminoso de dos habitaciones a cinco minutos del campus a partir del mes que viene.",
            "Светлая двухкомнатная квартира в пяти минутах от кампуса свободна со следующего месяца.",
            "شقة مشرقة من غرفتين على بعد خمس دقائق من الحرم الجامعي متاحة اعتبارًا من الشهر المقبل.",
            "离校园五分钟路程的一套明亮两居室下个月起出租。",
            "キャンパスから徒歩五分の明るい二部屋のアパートが、来月から入居できます。",
            "캠퍼스에서 걸어서 5분 거리의 밝은 투룸이 다음 달부터 입주 가능합니다.",
        ),
    ),
    (
        "how to learn a new language quickly",
        (
            "Speaking a little every day with native speakers helps more than memorising long word lists.",
            "Jeden Tag ein wenig mit Muttersprachlern zu sprechen hilft mehr als lange Vokabellisten auswendig zu lernen.",
            "Hablar un poco cada día con nativos ayuda más que memorizar largas listas de palabras.",
            "Немного говорить каждый день с носителями языка полезнее, чем заучивать длинные списки слов.",
            "التحدث قليلًا كل يوم مع متحدثين أصليين يفيد أكثر من حفظ قوائم طويلة من الكلمات.",
            "每天和母语者说一点，比背长长的单词表更有用。",
            "長い単語帳を丸暗記するより、毎日少しずつネイティブと話すほうが身につきます。",
            "긴 단어장을 외우는 것보다 매일 조금씩 원어민과 대화하는 것이 더 도움이 됩니다.",
        ),
    ),
    (
        "why did my flight get delayed?",
        (
            "Your flight is delayed by two hours because of a thunderstorm over the destination airport.",
            "Ihr Flug hat wegen eines Gewitters über dem Zielflughafen zwei Stunden Verspätung.",
            "Tu vuelo se retrasa dos horas por una tormenta sobre el aeropuerto de destino.",
            "Ваш рейс задерживается на два часа из-за грозы над аэропортом назначения.",
            "تأخرت رحلتك ساعتين بسبب عاصفة رعدية فوق مطار الوصول.",
            "由于目的地机场上空有雷暴，您的航班延误两个小时。",
            "到着空港の上空で雷雨が発生しているため、お客様の便は二時間遅れています。",
            "도착 공항 상공의 뇌우 때문에 고객님의 항공편이 두 시간 지연되었습니다.",
        ),
    ),
    (
        "keeping a cat indoors",
        (
            "Indoor cats need toys, a scratching post and a window to watch birds from.",
            "Wohnungskatzen brauchen Spielzeug, einen Kratzbaum und ein Fenster, um Vögel zu beobachten.",
            "Los gatos de interior necesitan juguetes, un rascador y una ventana desde la que mirar pájaros.",
            "Домашним кошкам нужны игрушки, когтеточка и окно, из которого можно наблюдать за птицами.",
            "تحتاج القطط المنزلية إلى ألعاب وعمود للخدش ونافذة تراقب منها الطيور.",
            "养在室内的猫需要玩具、猫抓板，还要有一扇能看鸟的窗户。",
            "室内飼いの猫には、おもちゃと爪とぎ、それに鳥を眺められる窓が必要です。",
            "실내에서 키우는 고양이에게는 장난감과 스크래처, 새를 구경할 창문이 필요해요.",
        ),
    ),
    (
        "how does solar power work?",
        (
            "Solar panels turn sunlight directly into electricity using layers of silicon.",
            "Solarmodule wandeln Sonnenlicht mithilfe von Siliziumschichten direkt in Strom um.",
            "Los paneles solares convierten la luz del sol directamente en electricidad mediante capas de silicio.",
            "Солнечные панели превращают солнечный свет прямо в электричество с помощью слоёв кремния.",
            "تحوّل الألواح الشمسية ضوء الشمس مباشرة إلى كهرباء باستخدام طبقات من السيليكون.",
            "太阳能电池板利用硅层把阳光直接转化为电能。",
            "太陽光パネルは、シリコンの層を使って日光を直接電気に変えます。",
            "태양광 패널은 실리콘 층을 이용해 햇빛을 바로 전기로 바꿉니다.",
        ),
    ),
    (
        "job interview tips",
        (
            "Research the company beforehand and prepare a short story about a problem you solved.",
            "Informieren Sie sich vorher über das Unternehmen und bereiten Sie eine kurze Geschichte über ein gelöstes Problem vor.",
            "Infórmate antes sobre la empresa y prepara una breve historia sobre un problema que resolviste.",
            "Заранее изучите компанию и подготовьте короткий рассказ о проблеме, которую вы решили.",
            "ابحث عن الشركة مسبقًا وجهّز قصة قصيرة عن مشكلة نجحت في حلها.",
            "面试前先了解这家公司，再准备一个你解决过的问题的小故事。",
            "事前に会社のことを調べ、自分が解決した問題についての短い話を用意しておきましょう。",
            "미리 회사에 대해 알아보고, 직접 해결했던 문제에 관한 짧은 이야기를 준비하세요.",
        ),
    ),
    (
        "museum opening hours",
        (
            "The museum is open from ten to six every day except Monday, and entry is free on Sundays.",
            "Das Museum ist außer montags täglich von zehn bis achtzehn Uhr geöffnet, sonntags ist der Eintritt frei.",
            "El museo abre todos los días de diez a seis excepto los lunes, y la entrada es gratuita los domingos.",
            "Музей открыт ежедневно с десяти до шести, кроме понедельника, а по воскресеньям вход бесплатный.",
            "يفتح المتحف يوميًا من العاشرة حتى السادسة ما عدا يوم الاثنين، والدخول مجاني أيام الأحد.",
            "博物馆除周一外每天十点到六点开放，周日免费参观。",
            "美術館は月曜日を除く毎日十時から六時まで開いていて、日曜日は入場無料です。",
            "박물관은 월요일을 제외하고 매일 10시부터 6시까지 열며, 일요일에는 무료입니다.",
        ),
    ),
    (
        "how to make kimchi stew",
        (
            "For kimchi stew, fry pork and sour kimchi, add water and tofu, and simmer for twenty minutes.",
            "Für Kimchi-Eintopf Schweinefleisch und sauren Kimchi anbraten, Wasser und Tofu dazugeben und zwanzig Minuten köcheln lassen.",
            "Para el guiso de kimchi, sofríe cerdo y kimchi ácido, añade agua y tofu y cuece a fuego lento veinte minutos.",
            "Для рагу из кимчи обжарьте свинину с кислым кимчи, добавьте воду и тофу и тушите двадцать минут.",
            "لتحضير يخنة الكيمتشي، حمّر لحم الخنزير مع الكيمتشي الحامض ثم أضف الماء والتوفو واتركها تغلي عشرين دقيقة.",
            "做泡菜汤时，先把猪肉和酸泡菜炒一下，再加水和豆腐，小火炖二十分钟。",
            "キムチチゲは、豚肉と酸っぱくなったキムチを炒め、水と豆腐を加えて二十分煮込みます。",
            "이 식당의 김치찌개처럼 끓이려면 돼지고기와 신 김치를 볶다가 물과 두부를 넣고 20분 끓이세요.",
        ),
    ),
    (
        "earthquake safety",
        (
            "During an earthquake, drop to the floor, take cover under a sturdy table and hold on.",
            "Bei einem Erdbeben auf den Boden gehen, unter einem stabilen Tisch Schutz suchen und sich festhalten.",
            "Durante un terremoto, agáchate, cúbrete bajo una mesa resistente y sujétate.",
            "Во время землетрясения опуститесь на пол, укройтесь под прочным столом и держитесь.",
            "أثناء الزلزال، انبطح على الأرض واحتمِ تحت طاولة متينة وتمسّك بها.",
            "地震时要趴下，躲到结实的桌子底下，并抓牢桌腿。",
            "地震のときは姿勢を低くし、丈夫な机の下に隠れて脚をしっかりつかんでください。",
            "지진이 나면 몸을 낮추고 튼튼한 탁자 밑으로 들어가 꼭 붙잡으세요.",
        ),
    ),
    (
        "password requirements",
        (
            "Your new password must be at least twelve characters long and include a number.",
            "Ihr neues Passwort muss mindestens zwölf Zeichen lang sein und eine Ziffer enthalten.",
            "Tu nueva contraseña debe tener al menos doce caracteres e incluir un número.",
            "Новый пароль должен содержать не меньше двенадцати символов и хотя бы одну цифру.",
            "يجب أن تتكون كلمة المرور الجديدة من اثني عشر حرفًا على الأقل وأن تتضمن رقمًا.",
            "新密码至少要有十二个字符，并且必须包含数字。",
            "新しいパスワードは十二文字以上で、数字を含める必要があります。",
            "새 비밀번호는 12자 이상이어야 하며 숫자를 포함해야 합니다.",
        ),
    ),
    (
        "history of the printing press",
        (
            "Gutenberg's printing press made books cheaper and spread literacy across Europe in the fifteenth century.",
            "Gutenbergs Buchdruck machte Bücher billiger und verbreitete im fünfzehnten Jahrhundert das Lesen in ganz Europa.",
            "La imprenta de Gutenberg abarató los libros y extendió la alfabetización por Europa en el siglo XV.",
            "Печатный станок Гутенберга удешевил книги и распространил грамотность по Европе в пятнадцатом веке.",
            "جعلت مطبعة غوتنبرغ الكتب أرخص ونشرت القراءة والكتابة في أوروبا في القرن الخامس عشر.",
            "古腾堡的印刷机让书籍变得便宜，十五世纪时推动了识字在欧洲的普及。",
            "グーテンベルクの印刷機は本を安くし、十五世紀のヨーロッパに読み書きを広めました。",
            "구텐베르크의 인쇄기는 책값을 낮추어 15세기 유럽에 글을 읽는 사람을 늘렸습니다.",
        ),
    ),
    (
        "how to save money on groceries",
        (
            "Plan meals for the week, write a shopping list and avoid shopping when you are hungry.",
            "Planen Sie die Mahlzeiten der Woche, schreiben Sie eine Einkaufsliste und kaufen Sie nicht hungrig ein.",
            "Planifica las comidas de la semana, haz una lista de la compra y no compres con hambre.",
            "Планируйте меню на неделю, составляйте список покупок и не ходите в магазин голодными.",
            "خطط لوجبات الأسبوع واكتب قائمة مشتريات وتجنب التسوق وأنت جائع.",
            "提前安排好一周的饭菜，列好购物清单，别在饿的时候去买东西。",
            "一週間の献立を決めて買い物リストを作り、お腹が空いているときには買い物に行かないことです。",
            "일주일 식단을 미리 짜고 장보기 목록을 만들고, 배고플 때는 장을 보지 마세요.",
        ),
    ),
    (
        "what causes tides?",
        (
            "Tides rise and fall twice a day because the moon's gravity pulls on the oceans.",
            "Ebbe und Flut wechseln zweimal am Tag, weil die Schwerkraft des Mondes an den Ozeanen zieht.",
            "Las mareas suben y bajan dos veces al día porque la gravedad de la luna atrae los océanos.",
            "Приливы и отливы сменяются дважды в сутки, потому что луна притягивает воды океанов.",
            "يرتفع المد وينخفض مرتين يوميًا لأن جاذبية القمر تشد مياه المحيطات.",
            "潮水每天涨落两次，是因为月球的引力在拉动海水。",
            "潮の満ち引きが一日に二回起こるのは、月の引力が海水を引っぱるからです。",
            "밀물과 썰물이 하루에 두 번 바뀌는 것은 달의 중력이 바닷물을 끌어당기기 때문입니다.",
        ),
    ),
    (
        "server is down error 503",
        (
            "The service returns error 503 because the database is being upgraded; please try again in an hour.",
            "Der Dienst meldet Fehler 503, weil die Datenbank aktualisiert wird; bitte versuchen Sie es in einer Stunde erneut.",
            "El servicio devuelve el error 503 porque se está actualizando la base de datos; inténtalo de nuevo en una hora.",
            "Сервис возвращает ошибку 503, потому что обновляется база данных; попробуйте снова через час.",
            "تعيد الخدمة الخطأ 503 لأن قاعدة البيانات قيد الترقية؛ يُرجى المحاولة مرة أخرى بعد ساعة.",
            "由于数据库正在升级，服务返回 503 错误，请一小时后再试。",
            "データベースの更新作業中のため、サービスは 503 エラーを返しています。一時間後にもう一度お試しください。",
            "데이터베이스를 업그레이드하는 중이라 서비스가 503 오류를 반환합니다. 한 시간 뒤에 다시 시도해 주세요.",
        ),
    ),
    (
        "photosynthesis explained",
        (
            "Plants use sunlight to turn carbon dioxide and water into sugar, releasing oxygen.",
            "Pflanzen nutzen Sonnenlicht, um aus Kohlendioxid und Wasser Zucker zu bilden, und geben dabei Sauerstoff ab.",
            "Las plantas usan la luz del sol para convertir el dióxido de carbono y el agua en azúcar y liberan oxígeno.",
            "Растения с помощью солнечного света превращают углекислый газ и воду в сахар и выделяют кислород.",
            "تستخدم النباتات ضوء الشمس لتحويل ثاني أكسيد الكربون والماء إلى سكر وتطلق الأكسجين.",
            "植物利用阳光把二氧化碳和水变成糖，同时释放出氧气。",
            "植物は日光を使って二酸化炭素と水から糖をつくり、酸素を放出します。",
            "식물은 햇빛을 이용해 이산화탄소와 물로 당을 만들고 산소를 내보냅니다.",
        ),
    ),
    (
        "hiking trail difficulty",
        (
            "The ridge trail is steep and rocky, takes about six hours and is not suitable for children.",
            "Der Gratweg ist steil und felsig, dauert etwa sechs Stunden und ist für Kinder nicht geeignet.",
            "La ruta de la cresta es empinada y rocosa, dura unas seis horas y no es adecuada para niños.",
            "Тропа по хребту крутая и каменистая, занимает около шести часов и не подходит для детей.",
            "مسار التلال شديد الانحدار وصخري، ويستغرق نحو ست ساعات ولا يناسب الأطفال.",
            "山脊步道又陡又多碎石，大约要走六个小时，不适合儿童。",
            "尾根のコースは急で岩が多く、六時間ほどかかるため子ども向きではありません。",
            "능선 코스는 가파르고 바위가 많아 여섯 시간쯤 걸리며 아이들에게는 맞지 않습니다.",
        ),
    ),
    (
        "how to write a cover letter",
        (
            "A good cover letter is one page long and explains why you want this particular job.",
            "Ein gutes Anschreiben ist eine Seite lang und erklärt, warum Sie genau diese Stelle möchten.",
            "Una buena carta de presentación ocupa una página y explica por qué quieres ese puesto en concreto.",
            "Хорошее сопроводительное письмо занимает одну страницу и объясняет, почему вы хотите именно эту работу.",
            "خطاب التقديم الجيد يقع في صفحة واحدة ويشرح لماذا تريد هذه الوظيفة بالذات.",
            "一封好的求职信只有一页，要说明你为什么想要这份工作。",
            "よい志望動機書は一枚にまとめ、なぜその仕事を希望するのかを説明します。",
            "좋은 자기소개서는 한 페이지 분량으로, 왜 바로 이 일을 원하는지 설명합니다.",
        ),
    ),
    (
        "coffee and sleep",
        (
            "Caffeine stays in the body for hours, so coffee in the late afternoon can keep you awake at night.",
            "Koffein bleibt stundenlang im Körper, deshalb kann Kaffee am späten Nachmittag nachts wach halten.",
            "La cafeína permanece horas en el cuerpo, así que el café a media tarde puede quitarte el sueño por la noche.",
            "Кофеин остаётся в организме несколько часов, поэтому кофе ближе к вечеру может помешать уснуть ночью.",
            "يبقى الكافيين في الجسم لساعات، لذا قد تُبقيك القهوة في آخر العصر مستيقظًا ليلًا.",
            "咖啡因会在体内停留好几个小时，所以傍晚喝咖啡可能让你晚上睡不着。",
            "カフェインは何時間も体に残るので、夕方にコーヒーを飲むと夜眠れなくなることがあります。",
            "카페인은 몇 시간 동안 몸에 남아 있어서 늦은 오후에 마신 커피 때문에 밤에 잠이 안 올 수 있어요.",
        ),
    ),
    (
        "electric car charging time",
        (
            "A fast charger fills an electric car's battery to eighty percent in about thirty minutes.",
            "Ein Schnelllader lädt die Batterie eines Elektroautos in etwa dreißig Minuten auf achtzig Prozent.",
            "Un cargador rápido llena la batería de un coche eléctrico hasta el ochenta por ciento en unos treinta minutos.",
            "Быстрая зарядка заполняет батарею электромобиля до восьмидесяти процентов примерно за тридцать минут.",
            "يشحن الشاحن السريع بطارية السيارة الكهربائية حتى ثمانين بالمئة في نحو ثلاثين دقيقة.",
            "快充桩大约三十分钟就能把电动车的电池充到百分之八十。",
            "急速充電器なら、電気自動車のバッテリーを三十分ほどで八割まで充電できます。",
            "급속 충전기로는 전기차 배터리를 30분 정도면 80퍼센트까지 충전할 수 있습니다.",
        ),
    ),
    (
        "how to apologize to a friend",
        (
            "Say clearly what you did wrong, do not make excuses, and ask how you can make it right.",
            "Sagen Sie klar, was Sie falsch gemacht haben, suchen Sie keine Ausreden und fragen Sie, wie Sie es wiedergutmachen können.",
            "Di claramente qué hiciste mal, no pongas excusas y pregunta cómo puedes arreglarlo.",
            "Чётко скажите, в чём вы были неправы, не оправдывайтесь и спросите, как можно всё исправить.",
            "قل بوضوح ما الخطأ الذي ارتكبته، ولا تختلق الأعذار، واسأل كيف يمكنك إصلاح الأمر.",
            "清楚地说出自己哪里做错了，不要找借口，再问问怎样才能弥补。",
            "何が悪かったのかをはっきり伝え、言い訳をせず、どうすれば埋め合わせができるか尋ねましょう。",
            "무엇을 잘못했는지 분명히 말하고, 변명하지 말고, 어떻게 하면 바로잡을 수 있을지 물어보세요.",
        ),
    ),
    (
        "volcano eruption warning",
        (
            "Authorities raised the alert level after the volcano began releasing ash and small tremors were recorded.",
            "Die Behörden erhöhten die Warnstufe, nachdem der Vulkan Asche ausstieß und leichte Erschütterungen gemessen wurden.",
            "Las autoridades elevaron el nivel de alerta después de que el volcán empezara a expulsar ceniza y se registraran pequeños temblores.",
            "Власти повысили уровень опасности после того, как вулкан начал выбрасывать пепел и были зафиксированы слабые толчки.",
            "رفعت السلطات مستوى التأهب بعد أن بدأ البركان يقذف الرماد وسُجلت هزات خفيفة.",
            "火山开始喷出火山灰并记录到轻微震动后，当局提高了警戒级别。",
            "火山が灰を噴き出し、小さな揺れも観測されたため、当局は警戒レベルを引き上げました。",
            "화산이 재를 내뿜기 시작하고 약한 진동이 관측되자 당국은 경보 단계를 높였습니다.",
        ),
    ),
    (
        "how many hours should a teenager sleep?",
        (
            "Teenagers need eight to ten hours of sleep a night to concentrate at school.",
            "Jugendliche brauchen pro Nacht acht bis zehn Stunden Schlaf, um sich in der Schule konzentrieren zu können.",
            "Los adolescentes necesitan dormir entre ocho y diez horas por noche para concentrarse en clase.",
            "Подросткам нужно спать от восьми до десяти часов в сутки, чтобы сосредотачиваться на учёбе.",
            "يحتاج المراهقون إلى ثماني إلى عشر ساعات من النوم كل ليلة ليتمكنوا من التركيز في المدرسة.",
            "青少年每晚需要睡八到十个小时，上课时才能集中注意力。",
            "十代の若者が学校で集中するには、毎晩八時間から十時間の睡眠が必要です。",
            "청소년이 학교에서 집중하려면 매일 밤 8시간에서 10시간은 자야 합니다.",
        ),
    ),
    (
        "wedding invitation wording",
        (
            "We would be delighted if you could join us for our wedding on the twelfth of June.",
            "Wir würden uns sehr freuen, wenn Sie am zwölften Juni mit uns unsere Hochzeit feiern.",
            "Nos encantaría que nos acompañaras en nuestra boda el doce de junio.",
            "Мы будем очень рады, если вы придёте на нашу свадьбу двенадцатого июня.",
            "يسعدنا كثيرًا أن تشاركونا حفل زفافنا في الثاني عشر من يونيو.",
            "诚挚邀请您六月十二日参加我们的婚礼。",
            "六月十二日の私たちの結婚式にお越しいただければ、とてもうれしく思います。",
            "6월 12일 저희 결혼식에 함께해 주시면 정말 기쁘겠습니다.",
        ),
    ),
    (
        "recycling plastic bottles",
        (
            "Rinse plastic bottles, remove the caps and put them in the yellow recycling bin.",
            "Plastikflaschen ausspülen, die Deckel abnehmen und in die gelbe Wertstofftonne werfen.",
            "Enjuaga las botellas de plástico, quítales el tapón y tíralas al contenedor amarillo.",
            "Пластиковые бутылки ополосните, снимите крышки и выбросьте в жёлтый контейнер для переработки.",
            "اشطف الزجاجات البلاستيكية وانزع أغطيتها وضعها في حاوية إعادة التدوير الصفراء.",
            "塑料瓶要先冲洗干净、拧下瓶盖，再放进黄色的回收桶。",
            "ペットボトルはすすいでキャップを外し、黄色いリサイクル用の箱に入れてください。",
            "플라스틱 병은 헹궈서 뚜껑을 떼고 노란색 재활용 통에 넣으세요.",
        ),
    ),
)

CODE: tuple[str, ...] = (
    "def mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0",
    "SELECT name, COUNT(*) AS orders FROM customers JOIN orders USING (id) GROUP BY name ORDER BY orders DESC;",
    "const total = items.reduce((sum, item) => sum + item.price * item.qty, 0);",
    'fn main() {\n    let v: Vec<u32> = (1..=10).filter(|n| n % 2 == 0).collect();\n    println!("{:?}", v);\n}',
    'func handler(w http.ResponseWriter, r *http.Request) {\n\tfmt.Fprintf(w, "hello %s", r.URL.Path[1:])\n}',
    'for f in *.log; do gzip -9 "$f"; done && ls -lh *.gz | sort -k5 -h',
    '#include <stdio.h>\nint main(void) { for (int i = 0; i < 3; i++) printf("%d\\n", i * i); return 0; }',
    '<button class="btn btn-primary" onclick="save()" disabled>Save changes</button>',
    '{"id": 42, "tags": ["alpha", "beta"], "price": 19.99, "in_stock": true, "dims": {"w": 3, "h": 7}}',
    r"^(?P<user>[\w.+-]+)@(?P<host>[\w-]+\.)+[A-Za-z]{2,}$",
    "class Stack:\n    def __init__(self):\n        self._items = []\n\n    def push(self, x):\n        self._items.append(x)",
    "git rebase -i HEAD~3 && git push --force-with-lease origin feature/login",
    "kubectl rollout restart deployment/api -n prod && kubectl rollout status deployment/api -n prod",
    "import numpy as np\nA = np.random.rand(3, 3)\nprint(np.linalg.eigvals(A @ A.T))",
    "public static int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }",
    "CREATE INDEX CONCURRENTLY idx_orders_created ON orders (created_at DESC) WHERE status = 'paid';",
    'docker run --rm -p 8000:8000 -v "$PWD/models:/models:ro" embedserve:latest serve --port 8000',
    "try:\n    value = int(text)\nexcept ValueError as exc:\n    raise SystemExit(f'not a number: {text!r}') from exc",
    "x = [i ** 2 for i in range(100) if i % 7 == 3]  # squares of numbers that leave 3 mod 7",
    "Traceback (most recent call last):\n  File \"app.py\", line 12, in <module>\nKeyError: 'user_id'",
    "@media (max-width: 600px) { .sidebar { display: none; } main { padding: 0 8px; } }",
    "let mut map = HashMap::new(); *map.entry(word).or_insert(0) += 1;",
    "curl -s -X POST localhost:8000/v1/embeddings -H 'Content-Type: application/json' -d '{\"input\": \"hi\"}'",
    "matrix = [[0] * n for _ in range(m)]; matrix[i][j] = max(matrix[i-1][j], matrix[i][j-1]) + grid[i][j]",
)

SHORT: tuple[str, ...] = (
    "ok",
    "Yes.",
    "no",
    "?",
    "42",
    "thanks!",
    "N/A",
    "SELECT 1",
    "Danke",
    "¡Hola!",
    "да",
    "спасибо",
    "نعم",
    "شكرا",
    "好",
    "谢谢",
    "はい",
    "ありがとう",
    "네",
    "감사합니다",
    "👍",
    "!!!",
    "3.14159",
    "TODO",
)


def _long(language: str) -> str:
    """One language's sentences run together: past 256 tokens in every language."""
    column = LANGUAGES.index(language)
    return " ".join(sentences[column] for _, sentences in TOPICS)


def language(text: str) -> str:
    """The group a text of `eval_texts()` belongs to (`en` ... `ko`, `code`, `short`, `long`)."""
    return _groups().get(text, "other")


@cache
def _groups() -> dict[str, str]:
    groups: dict[str, str] = {}
    for query, sentences in TOPICS:
        groups[query] = "en"
        for lang, sentence in zip(LANGUAGES, sentences):
            groups[sentence] = lang
    groups.update(dict.fromkeys(CODE, "code"))
    groups.update(dict.fromkeys(SHORT, "short"))
    groups.update({_long(lang): "long" for lang in LANGUAGES})
    return groups


@cache
def eval_texts() -> tuple[str, ...]:
    """Every text of the set, in a fixed order: topic by topic (query, then its eight sentences),
    then code, short texts and long texts."""
    texts: list[str] = []
    for query, sentences in TOPICS:
        texts.append(query)
        texts.extend(sentences)
    texts.extend(CODE)
    texts.extend(SHORT)
    texts.extend(_long(lang) for lang in LANGUAGES)
    return tuple(texts)


def rerank_sets(documents: int = 8) -> list[tuple[str, tuple[str, ...]]]:
    """(query, documents) lists for cross-encoders: each topic's English query against that topic's
    sentence and the same-language sentences of the next topics, one language per query in turn."""
    out = []
    for t, (query, _) in enumerate(TOPICS):
        column = t % len(LANGUAGES)
        docs = tuple(TOPICS[(t + k) % len(TOPICS)][1][column] for k in range(documents))
        out.append((query, docs))
    return out
