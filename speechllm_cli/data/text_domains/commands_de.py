"""The English command grammar's scenarios, actions and slot types in German, for cross-lingual SLU.

Fillers are German words; the frame keeps the English labels, as a multilingual SLURP-style corpus
would, so scenario and action accuracy compare across languages directly.
"""

from __future__ import annotations

from speechllm_cli.data.text_domains.base import TextItem
from speechllm_cli.data.text_domains.grammar import Grammar, grammar_items

_HOURS = ["ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn", "elf", "zwölf"]
_SLOTS: dict[str, list[str]] = {
    "time": [f"{h} uhr{m}" for h in _HOURS for m in ["", " fünfzehn", " dreißig", " fünfundvierzig"]]
    + ["mittag", "mitternacht", "halb sieben", "viertel vor acht", "viertel nach neun"],
    "date": ["heute", "morgen", "heute abend", "am wochenende", "nächste woche", "am montag", "am dienstag",
             "am mittwoch", "am donnerstag", "am freitag", "am samstag", "am sonntag", "übermorgen"],
    "place_name": ["london", "paris", "berlin", "madrid", "rom", "hamburg", "münchen", "köln", "wien", "zürich",
                   "dublin", "oslo", "prag", "lissabon", "dresden", "leipzig", "new york", "den flughafen",
                   "die innenstadt", "den bahnhof", "mein büro", "den strand"],
    "person": ["johann", "maria", "peter", "susanne", "david", "emma", "jakob", "lena", "michael", "sarah",
               "meiner mutter", "meinem vater", "meiner schwester", "meinem bruder", "meinem chef", "dem arzt",
               "anna", "thomas", "lukas", "julia", "klaus", "monika"],
    "house_place": ["küche", "garage", "diele", "waschküche", "speisekammer", "werkstatt", "bibliothek",
                    "veranda", "mansarde", "wohnung"],
    "temperature": [f"{n} grad" for n in ["sechzehn", "siebzehn", "achtzehn", "neunzehn", "zwanzig",
                                          "einundzwanzig", "zweiundzwanzig", "dreiundzwanzig"]],
    "music_genre": ["jazz", "klassische musik", "rockmusik", "popmusik", "blues", "countrymusik", "reggae",
                    "hip hop", "volksmusik", "klaviermusik", "etwas entspannendes", "etwas fröhliches"],
    "artist_name": ["die beatles", "mozart", "bach", "adele", "queen", "miles davis", "nena", "bob marley",
                    "elvis", "beethoven", "udo lindenberg", "die rolling stones"],
    "food": ["milch", "eier", "brot", "butter", "äpfel", "bananen", "kaffee", "tee", "reis", "nudeln",
             "tomaten", "käse", "hähnchen", "orangensaft", "joghurt", "zwiebeln", "kartoffeln", "karotten"],
    "event_name": ["den klempner anzurufen", "die miete zu zahlen", "die blumen zu gießen", "ein geschenk zu kaufen",
                   "die kinder abzuholen", "meine tabletten zu nehmen", "die katze zu füttern",
                   "meinen pass zu verlängern", "ins fitnessstudio zu gehen"],
    "topic": ["das budget", "den wochenendausflug", "den projektplan", "die party", "den neuen vertrag",
              "die notizen", "die urlaubsfotos", "das zeugnis"],
    "transport_type": ["zug", "bus", "flug", "fähre"],
}
_PREFIXES = ["", "bitte ", "hallo ", "hallo bitte "]
_QUESTION_PREFIXES = ["", "hallo ", "sag mir ", "kannst du mir sagen "]

_TEMPLATES: list[tuple[str, str, str, bool]] = [
    ("alarm", "set", "stell einen wecker für {time}", True),
    ("alarm", "set", "weck mich {date} um {time}", True),
    ("alarm", "remove", "lösche meinen wecker für {time}", True),
    ("alarm", "remove", "lösche den wecker {date}", True),
    ("alarm", "query", "welche wecker habe ich {date}", False),
    ("weather", "query", "wie ist das wetter in {place_name} {date}", False),
    ("weather", "query", "regnet es {date} in {place_name}", False),
    ("weather", "query", "brauche ich {date} einen schirm", False),
    ("calendar", "set", "plane ein treffen mit {person} {date} um {time}", True),
    ("calendar", "set", "erinnere mich {date} daran {event_name}", True),
    ("calendar", "query", "was steht {date} in meinem kalender", False),
    ("calendar", "query", "wann ist mein nächstes treffen mit {person}", False),
    ("calendar", "remove", "sag mein treffen mit {person} {date} ab", True),
    ("iot", "lights_on", "mach das licht in der {house_place} an", True),
    ("iot", "lights_off", "mach das licht in der {house_place} aus", True),
    ("iot", "lights_dim", "dimme das licht in der {house_place}", True),
    ("iot", "thermostat", "stell die temperatur in der {house_place} auf {temperature}", True),
    ("play", "music", "spiel {music_genre}", True),
    ("play", "music", "spiel {music_genre} in der {house_place}", True),
    ("play", "music", "spiel ein lied von {artist_name}", True),
    ("transport", "ticket", "buch ein {transport_type} ticket nach {place_name} {date}", True),
    ("transport", "query", "wann fährt der nächste {transport_type} nach {place_name}", False),
    ("transport", "taxi", "ruf ein taxi nach {place_name} um {time}", True),
    ("transport", "taxi", "bestell mir ein taxi nach {place_name}", True),
    ("email", "send", "schreib eine mail an {person} über {topic}", True),
    ("email", "query", "habe ich neue mails von {person}", False),
    ("lists", "add", "setz {food} auf meine einkaufsliste", True),
    ("lists", "add", "setz {food} und {food} auf die einkaufsliste", True),
    ("lists", "query", "was steht auf meiner einkaufsliste", False),
    ("lists", "remove", "nimm {food} von meiner einkaufsliste", True),
]
GERMAN = Grammar(_SLOTS, _PREFIXES, _QUESTION_PREFIXES, _TEMPLATES)


def command_items_de(seed: int) -> list[TextItem]:
    """German commands (see :func:`grammar_items`)."""
    return grammar_items(GERMAN, seed)
