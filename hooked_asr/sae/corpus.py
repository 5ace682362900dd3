"""Small text corpora to speak with espeak-ng for SAE training and inspection.

English: the Harvard sentences (IEEE 1969 phonetically balanced lists, public domain)
and sentences built from templates, so words recur across contexts (a word feature
must fire on "seven" in many sentences, not on one sentence). A few languages for the
cross-lingual steering experiment share the digits and simple sentences, so the same
content can be compared across languages.
"""

from __future__ import annotations

import random

HARVARD = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
]

_NAMES = ["Anna", "Peter", "Maria", "John", "Lucy", "David", "Sarah", "Tom"]
_NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "twenty"]
_THINGS = ["apples", "books", "chairs", "dogs", "horses", "letters", "boats", "shoes", "windows", "candles"]
_COLORS = ["red", "green", "yellow", "black", "white", "purple", "orange", "brown"]
_PLACES = ["the kitchen", "the garden", "the station", "the market", "the library", "the river", "the city"]
_VERBS = ["bought", "painted", "counted", "found", "carried", "sold", "washed", "watched"]
_TEMPLATES = [
    "{name} {verb} {num} {color} {thing} in {place}.",
    "Yesterday {name} {verb} {num} {thing}.",
    "There are {num} {color} {thing} near {place}.",
    "Please bring {num} {thing} to {place} tomorrow.",
    "Did {name} really see {num} {color} {thing}?",
    "We met {name} at {place} at {num} o'clock.",
]


def english_sentences(n: int, seed: int = 0, harvard: bool = True) -> list[str]:
    """``n`` English sentences: the Harvard sentences first (if ``harvard``), then templates."""
    rng = random.Random(seed)
    out = list(HARVARD) if harvard else []
    rng.shuffle(out)
    while len(out) < n:
        out.append(
            rng.choice(_TEMPLATES).format(
                name=rng.choice(_NAMES),
                verb=rng.choice(_VERBS),
                num=rng.choice(_NUMBERS),
                color=rng.choice(_COLORS),
                thing=rng.choice(_THINGS),
                place=rng.choice(_PLACES),
            )
        )
    return out[:n]


# The same eight sentences in each language (espeak-ng voice in the key).
MULTILINGUAL = {
    "en": [
        "The cat sleeps on the warm chair.",
        "I would like a cup of coffee, please.",
        "The train leaves at seven in the morning.",
        "My brother lives in a small house.",
        "Today the weather is very nice.",
        "Where is the train station?",
        "We are going to the market tomorrow.",
        "The children play in the garden.",
    ],
    "de": [
        "Die Katze schläft auf dem warmen Stuhl.",
        "Ich möchte bitte eine Tasse Kaffee.",
        "Der Zug fährt um sieben Uhr morgens ab.",
        "Mein Bruder wohnt in einem kleinen Haus.",
        "Heute ist das Wetter sehr schön.",
        "Wo ist der Bahnhof?",
        "Wir gehen morgen auf den Markt.",
        "Die Kinder spielen im Garten.",
    ],
    "fr": [
        "Le chat dort sur la chaise chaude.",
        "Je voudrais une tasse de café, s'il vous plaît.",
        "Le train part à sept heures du matin.",
        "Mon frère habite dans une petite maison.",
        "Aujourd'hui il fait très beau.",
        "Où est la gare?",
        "Nous allons au marché demain.",
        "Les enfants jouent dans le jardin.",
    ],
    "es": [
        "El gato duerme en la silla caliente.",
        "Quisiera una taza de café, por favor.",
        "El tren sale a las siete de la mañana.",
        "Mi hermano vive en una casa pequeña.",
        "Hoy hace muy buen tiempo.",
        "¿Dónde está la estación de tren?",
        "Mañana vamos al mercado.",
        "Los niños juegan en el jardín.",
    ],
    "it": [
        "Il gatto dorme sulla sedia calda.",
        "Vorrei una tazza di caffè, per favore.",
        "Il treno parte alle sette del mattino.",
        "Mio fratello abita in una piccola casa.",
        "Oggi il tempo è molto bello.",
        "Dov'è la stazione?",
        "Domani andiamo al mercato.",
        "I bambini giocano in giardino.",
    ],
}

ESPEAK_VOICE = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "it": "it"}

__all__ = ["ESPEAK_VOICE", "HARVARD", "MULTILINGUAL", "english_sentences"]
