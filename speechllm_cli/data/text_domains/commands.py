"""Spoken commands to a home assistant in English, with SLURP-style frames as targets.

The same sentences serve as a target text domain for ASR and as an SLU task.
"""

from __future__ import annotations

from speechllm_cli.data.text_domains.base import TextItem
from speechllm_cli.data.text_domains.grammar import Grammar, grammar_items

_HOURS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
_SLOTS: dict[str, list[str]] = {
    "time": [f"{h} {m}".strip() for h in _HOURS for m in ["", "fifteen", "thirty", "forty five", "o'clock"]]
    + [f"{h} {p}" for h in _HOURS for p in ["am", "pm", "in the morning", "in the evening"]]
    + ["noon", "midnight", "half past six", "quarter to eight", "quarter past nine"],
    "date": ["today", "tomorrow", "tonight", "this weekend", "next week", "on monday", "on tuesday",
             "on wednesday", "on thursday", "on friday", "on saturday", "on sunday", "the day after tomorrow"],
    "place_name": ["london", "paris", "berlin", "madrid", "rome", "boston", "chicago", "seattle", "denver",
                   "dublin", "oslo", "vienna", "prague", "lisbon", "toronto", "sydney", "tokyo", "new york",
                   "san francisco", "the airport", "the city centre", "the station", "my office", "the beach"],
    "person": ["john", "mary", "peter", "susan", "david", "emma", "james", "olivia", "michael", "sarah",
               "my mother", "my father", "my sister", "my brother", "my boss", "the doctor", "anna", "tom",
               "lucy", "george", "alice", "robert", "kate", "daniel"],
    "house_place": ["kitchen", "bedroom", "living room", "bathroom", "garage", "hallway", "office",
                    "dining room", "garden", "basement"],
    "temperature": [f"{n} degrees" for n in ["sixteen", "seventeen", "eighteen", "nineteen", "twenty",
                                             "twenty one", "twenty two", "twenty three", "twenty four"]],
    "music_genre": ["jazz", "classical music", "rock", "pop music", "the blues", "country music", "reggae",
                    "hip hop", "folk music", "piano music", "something relaxing", "something upbeat"],
    "artist_name": ["the beatles", "mozart", "bach", "adele", "queen", "miles davis", "taylor swift",
                    "bob marley", "elvis", "beethoven", "nina simone", "the rolling stones"],
    "food": ["milk", "eggs", "bread", "butter", "apples", "bananas", "coffee", "tea", "rice", "pasta",
             "tomatoes", "cheese", "chicken", "orange juice", "yoghurt", "onions", "potatoes", "carrots"],
    "event_name": ["call the plumber", "pay the rent", "water the plants", "buy a present", "book a haircut",
                   "pick up the kids", "take my medicine", "feed the cat", "renew my passport", "go to the gym"],
    "topic": ["the budget", "the weekend trip", "the project plan", "the party", "the new contract",
              "the meeting notes", "the holiday photos", "the school report"],
    "transport_type": ["train", "bus", "flight", "ferry"],
}
_PREFIXES = ["", "please ", "can you ", "could you please ", "hey ", "i want you to ", "would you "]
_QUESTION_PREFIXES = ["", "hey ", "tell me ", "can you tell me "]

_TEMPLATES: list[tuple[str, str, str, bool]] = [
    ("alarm", "set", "set an alarm for {time}", True),
    ("alarm", "set", "wake me up at {time} {date}", True),
    ("alarm", "set", "set an alarm {date} at {time}", True),
    ("alarm", "remove", "cancel my alarm for {time}", True),
    ("alarm", "remove", "delete the alarm {date}", True),
    ("alarm", "query", "what alarms do i have {date}", False),
    ("weather", "query", "what is the weather in {place_name} {date}", False),
    ("weather", "query", "will it rain in {place_name} {date}", False),
    ("weather", "query", "do i need an umbrella {date}", False),
    ("weather", "query", "how cold will it be in {place_name} {date}", False),
    ("calendar", "set", "schedule a meeting with {person} {date} at {time}", True),
    ("calendar", "set", "remind me to {event_name} {date}", True),
    ("calendar", "set", "remind me to {event_name} at {time}", True),
    ("calendar", "query", "what is on my calendar {date}", False),
    ("calendar", "query", "when is my next meeting with {person}", False),
    ("calendar", "remove", "cancel my meeting with {person} {date}", True),
    ("iot", "lights_on", "turn on the lights in the {house_place}", True),
    ("iot", "lights_off", "turn off the lights in the {house_place}", True),
    ("iot", "lights_dim", "dim the lights in the {house_place}", True),
    ("iot", "thermostat", "set the temperature in the {house_place} to {temperature}", True),
    ("iot", "thermostat", "make it {temperature} in the {house_place}", True),
    ("play", "music", "play {music_genre}", True),
    ("play", "music", "play some {music_genre} in the {house_place}", True),
    ("play", "music", "play a song by {artist_name}", True),
    ("play", "music", "put on {artist_name} {date}", True),
    ("transport", "ticket", "book a {transport_type} ticket to {place_name} {date}", True),
    ("transport", "query", "when does the next {transport_type} to {place_name} leave", False),
    ("transport", "taxi", "call a taxi to {place_name} at {time}", True),
    ("transport", "taxi", "get me a taxi to {place_name}", True),
    ("email", "send", "send an email to {person} about {topic}", True),
    ("email", "send", "write to {person} about {topic} {date}", True),
    ("email", "query", "do i have new emails from {person}", False),
    ("lists", "add", "add {food} to my shopping list", True),
    ("lists", "add", "put {food} and {food} on the shopping list", True),
    ("lists", "query", "what is on my shopping list", False),
    ("lists", "remove", "remove {food} from my shopping list", True),
]
ENGLISH = Grammar(_SLOTS, _PREFIXES, _QUESTION_PREFIXES, _TEMPLATES)


def command_items(seed: int) -> list[TextItem]:
    """English commands (see :func:`grammar_items`)."""
    return grammar_items(ENGLISH, seed)
