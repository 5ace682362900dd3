"""Labelled audio sets built offline: espeak-ng speech, noise, tones, music.

Every builder returns a :class:`LabelledDataset`: a ``Sequence`` whose items are dicts
``{"audio": float32 16 kHz, "label": int, "label_name": str, ...metadata}``, the shape
:func:`hooked_asr.activations.extract_activations` reads. Numeric metadata (ints, floats)
becomes label tensors there, strings go in the store's header, so every item of one
dataset carries the same keys.

Builders are deterministic in ``seed``: the same call gives bit-identical audio, a
different seed different audio. Items are ordered class-interleaved (``j``-th item of class
0, ``j``-th of class 1, ...), so any prefix of the dataset is balanced, and where it makes
sense the ``j``-th item of every class shares its sentence (and voice) so that the label is
the only thing that differs systematically. ``dataset.dataset_id`` names the builder, its
parameters and a digest of the content (metadata and audio bytes): it changes when the
content changes, which is what the resumable activation store keys on.

Builders: :func:`gender_dataset`, :func:`accent_dataset`, :func:`language_dataset`,
:func:`speech_nonspeech_dataset`, :func:`noisy_dataset`, :func:`semantic_dataset`,
:func:`hallucination_prone_inputs` and :func:`hallucination_dataset` (needs a model).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hooked_asr.datasets.nonspeech import NONSPEECH_KINDS, mix_at_snr, nonspeech_clip

from hooked_asr.audio import SAMPLE_RATE
MANIFEST = "manifest.json"

# ---- built-in text ---------------------------------------------------------------------
SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "I would like a cup of coffee please.",
    "Please call Stella and ask her to bring these things.",
    "The train to London leaves at half past nine.",
    "She sells sea shells by the sea shore.",
    "We should meet again next week to finish the report.",
    "My favourite colour is green and my brother likes blue.",
    "The weather today is cold and windy.",
    "Can you tell me the way to the station?",
    "He forgot his keys on the kitchen table.",
    "The children are playing football in the garden.",
    "It is raining again, so take an umbrella.",
    "Our teacher gave us a lot of homework today.",
    "The museum opens at ten in the morning.",
    "I have never seen such a beautiful sunset.",
    "Turn left at the next corner and go straight ahead.",
    "The soup is too hot to eat right now.",
    "They bought a new car last month.",
    "Do you know what time the shop closes?",
    "The cat is sleeping on the warm windowsill.",
    "Please send me the documents by Friday.",
    "The doctor said I need more rest.",
    "We watched a very funny film last night.",
    "The bridge was built more than a hundred years ago.",
    "My sister plays the piano every evening.",
    "Could you open the window a little?",
    "The meeting has been moved to Thursday afternoon.",
    "A good breakfast is the best way to start the day.",
    "The river flows slowly through the old town.",
    "I need to buy bread, milk and eggs.",
    "The plane landed safely despite the storm.",
    "Reading books is my favourite hobby.",
    "The computer stopped working this morning.",
    "Let us go for a walk in the park.",
    "The library is quiet on Sunday mornings.",
    "He runs five kilometres before work every day.",
    "The flowers in the garden are blooming early this year.",
    "Please turn off the lights when you leave.",
    "The price of fresh fruit has gone up again.",
    "We are planning a trip to the mountains.",
    "The baby finally fell asleep after midnight.",
    "Write your name at the top of the page.",
    "The old clock on the wall stopped at noon.",
    "Nobody expected the match to end in a draw.",
    "The bakery on the corner sells excellent bread.",
    "I will call you back in five minutes.",
    "The students listened carefully to the lecture.",
    "Fresh snow covered the roofs of the village.",
)

# The same sixteen sentences in each language, so a language probe is not a topic probe.
LANGUAGE_SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "The dog is eating in the kitchen.", "I would like a glass of water.", "The weather is very nice today.",
        "Where is the train station?", "My brother lives in a big city.", "We are going to the beach tomorrow.",
        "The book is on the table.", "She works in a hospital.", "The children are playing in the garden.",
        "I do not understand the question.", "The shop closes at eight o'clock.", "It is raining again this morning.",
        "My mother makes very good soup.", "The car is red and new.", "We have two cats and a dog.",
        "Thank you very much for your help.",
    ),
    "de": (
        "Der Hund frisst in der Küche.", "Ich möchte ein Glas Wasser.", "Das Wetter ist heute sehr schön.",
        "Wo ist der Bahnhof?", "Mein Bruder wohnt in einer großen Stadt.", "Wir fahren morgen an den Strand.",
        "Das Buch liegt auf dem Tisch.", "Sie arbeitet in einem Krankenhaus.", "Die Kinder spielen im Garten.",
        "Ich verstehe die Frage nicht.", "Der Laden schließt um acht Uhr.", "Es regnet heute Morgen schon wieder.",
        "Meine Mutter kocht sehr gute Suppe.", "Das Auto ist rot und neu.", "Wir haben zwei Katzen und einen Hund.",
        "Vielen Dank für Ihre Hilfe.",
    ),
    "fr": (
        "Le chien mange dans la cuisine.", "Je voudrais un verre d'eau.", "Il fait très beau aujourd'hui.",
        "Où est la gare?", "Mon frère habite dans une grande ville.", "Nous allons à la plage demain.",
        "Le livre est sur la table.", "Elle travaille dans un hôpital.", "Les enfants jouent dans le jardin.",
        "Je ne comprends pas la question.", "Le magasin ferme à huit heures.", "Il pleut encore ce matin.",
        "Ma mère fait une très bonne soupe.", "La voiture est rouge et neuve.", "Nous avons deux chats et un chien.",
        "Merci beaucoup pour votre aide.",
    ),
    "es": (
        "El perro come en la cocina.", "Quisiera un vaso de agua.", "Hoy hace muy buen tiempo.",
        "¿Dónde está la estación de tren?", "Mi hermano vive en una ciudad grande.", "Mañana vamos a la playa.",
        "El libro está sobre la mesa.", "Ella trabaja en un hospital.", "Los niños juegan en el jardín.",
        "No entiendo la pregunta.", "La tienda cierra a las ocho.", "Esta mañana está lloviendo otra vez.",
        "Mi madre hace una sopa muy buena.", "El coche es rojo y nuevo.", "Tenemos dos gatos y un perro.",
        "Muchas gracias por su ayuda.",
    ),
    "it": (
        "Il cane mangia in cucina.", "Vorrei un bicchiere d'acqua.", "Oggi il tempo è molto bello.",
        "Dov'è la stazione?", "Mio fratello vive in una grande città.", "Domani andiamo al mare.",
        "Il libro è sul tavolo.", "Lei lavora in un ospedale.", "I bambini giocano in giardino.",
        "Non capisco la domanda.", "Il negozio chiude alle otto.", "Stamattina piove di nuovo.",
        "Mia madre fa una zuppa molto buona.", "La macchina è rossa e nuova.", "Abbiamo due gatti e un cane.",
        "Grazie mille per il tuo aiuto.",
    ),
    "pt": (
        "O cão come na cozinha.", "Eu queria um copo de água.", "O tempo está muito bom hoje.",
        "Onde fica a estação de comboios?", "O meu irmão mora numa cidade grande.", "Amanhã vamos à praia.",
        "O livro está em cima da mesa.", "Ela trabalha num hospital.", "As crianças brincam no jardim.",
        "Eu não percebo a pergunta.", "A loja fecha às oito horas.", "Esta manhã está a chover outra vez.",
        "A minha mãe faz uma sopa muito boa.", "O carro é vermelho e novo.", "Temos dois gatos e um cão.",
        "Muito obrigado pela sua ajuda.",
    ),
    "nl": (
        "De hond eet in de keuken.", "Ik wil graag een glas water.", "Het weer is vandaag erg mooi.",
        "Waar is het station?", "Mijn broer woont in een grote stad.", "Morgen gaan we naar het strand.",
        "Het boek ligt op de tafel.", "Zij werkt in een ziekenhuis.", "De kinderen spelen in de tuin.",
        "Ik begrijp de vraag niet.", "De winkel sluit om acht uur.", "Het regent vanochtend weer.",
        "Mijn moeder maakt heel lekkere soep.", "De auto is rood en nieuw.", "Wij hebben twee katten en een hond.",
        "Heel erg bedankt voor je hulp.",
    ),
}

# language code -> espeak-ng voice
LANGUAGE_VOICES: dict[str, str] = {"en": "en-us", "de": "de", "fr": "fr", "es": "es", "it": "it", "pt": "pt", "nl": "nl"}

# accent label -> espeak-ng voice ("en-gb" is espeak's "en" voice, British English)
ACCENT_VOICES: dict[str, str] = {
    "en-us": "en-us", "en-gb": "en", "en-gb-scotland": "en-gb-scotland", "en-029": "en-029",
    "en-gb-x-rp": "en-gb-x-rp", "en-us-nyc": "en-us-nyc", "en-gb-x-gbclan": "en-gb-x-gbclan",
    "en-gb-x-gbcwmd": "en-gb-x-gbcwmd",
}

# espeak-ng voice variants ("" is the voice's own, male, default)
MALE_VARIANTS: tuple[str, ...] = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7")
FEMALE_VARIANTS: tuple[str, ...] = ("+f1", "+f2", "+f3", "+f4", "+f5")
DEFAULT_VOICES: tuple[str, ...] = ("en-us", "en", "en-gb-scotland", "en-029")

CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "fruits": ("apple", "banana", "orange", "mango", "pear", "peach", "cherry", "grape", "lemon", "plum",
               "melon", "pineapple", "strawberry", "apricot", "kiwi", "coconut"),
    "clothing": ("shirt", "jacket", "coat", "dress", "skirt", "sweater", "scarf", "hat", "sock", "glove",
                 "boot", "trousers", "jeans", "blouse", "tie", "belt"),
    "countries": ("France", "Germany", "Spain", "Italy", "Japan", "China", "Canada", "Brazil", "Mexico",
                  "India", "Egypt", "Kenya", "Norway", "Sweden", "Peru", "Chile"),
    "weather": ("rain", "snow", "wind", "sunshine", "fog", "thunder", "lightning", "hail", "storm", "frost",
                "drizzle", "heat", "breeze", "cloud", "mist", "sleet"),
    "animals": ("dog", "cat", "horse", "cow", "sheep", "lion", "tiger", "elephant", "rabbit", "mouse",
                "monkey", "giraffe", "zebra", "wolf", "bear", "fox"),
    "vehicles": ("car", "bus", "truck", "bicycle", "train", "plane", "boat", "ship", "motorbike", "taxi",
                 "van", "tram", "helicopter", "scooter", "tractor", "submarine"),
    "colors": ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white",
               "grey", "violet", "turquoise", "silver", "gold", "beige"),
    "body_parts": ("hand", "foot", "arm", "leg", "head", "knee", "elbow", "shoulder", "finger", "nose",
                   "ear", "eye", "mouth", "neck", "ankle", "wrist"),
}
_CATEGORY_ALIASES = {"body parts": "body_parts", "body-parts": "body_parts", "colours": "colors", "fruit": "fruits"}

REPEAT_WORDS: tuple[str, ...] = ("go", "yes", "hello", "one", "stop", "no", "right", "okay", "up", "run", "the", "hey")


# ---- the dataset ---------------------------------------------------------------------
AudioSource = np.ndarray | str | Path | Callable[[], np.ndarray]


class LabelledDataset(Sequence):
    """A sequence of ``{"audio", <label_key>, "label_name", ...metadata}`` dicts.

    ``records[i]`` is item ``i``'s metadata (JSON-able scalars: int, float, str, bool);
    ``audio[i]`` is its audio: a float32 array at 16 kHz, a file path (read with
    :func:`hooked_asr.audio.load_audio` when the item is accessed), or a zero-argument
    callable (lazy synthesis). ``label_names[k]`` names label value ``k``.
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        audio: Sequence[AudioSource],
        label_names: Sequence[str],
        dataset_id: str | None = None,
        label_key: str = "label",
        allow_silence: bool = True,
    ):
        if len(records) != len(audio):
            raise ValueError(f"{len(records)} records but {len(audio)} audio entries")
        self.records = [dict(r) for r in records]
        for i, r in enumerate(self.records):
            if "audio" in r:
                raise ValueError(f"record {i} has an 'audio' key; pass audio separately")
            if label_key not in r:
                raise ValueError(f"record {i} lacks the label key {label_key!r}")
        self._audio = list(audio)
        self.label_names = list(label_names)
        self.label_key = label_key
        self.allow_silence = allow_silence
        self.dataset_id = dataset_id or f"LabelledDataset[{len(self.records)}]@{_digest(self.records)}"

    @classmethod
    def from_items(cls, items: Iterable[Mapping[str, Any]], label_names: Sequence[str] | None = None,
                   dataset_id: str | None = None, label_key: str = "label") -> LabelledDataset:
        """From dicts that each carry ``audio``; ``label_names`` defaults to ``str(k)`` per label value."""
        items = list(items)
        recs = [{k: v for k, v in it.items() if k != "audio"} for it in items]
        audio = [it["audio"] for it in items]
        if label_names is None:
            n = max((int(r[label_key]) for r in recs), default=-1) + 1
            label_names = [str(k) for k in range(n)]
        return cls(recs, audio, label_names, dataset_id, label_key)

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, i: int) -> np.ndarray:
        src = self._audio[i]
        if callable(src):
            src = src()
        if isinstance(src, (str, Path)):
            from hooked_asr.audio import load_audio

            return load_audio(src, allow_long=True, allow_silence=self.allow_silence)
        return np.asarray(src, dtype=np.float32)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.subset(range(len(self))[i])
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        i = i % len(self)
        return {"audio": self._load(i), **self.records[i]}

    def subset(self, indices: Iterable[int]) -> LabelledDataset:
        """The items at ``indices`` (their ids fold into ``dataset_id``)."""
        idx = [int(i) for i in indices]
        sub_id = f"{self.dataset_id}[{_digest(idx)}]"
        return LabelledDataset([self.records[i] for i in idx], [self._audio[i] for i in idx], self.label_names,
                               sub_id, self.label_key, self.allow_silence)

    def labels(self) -> np.ndarray:
        """``[len]`` int64 array of the ``label_key`` values."""
        return np.array([r[self.label_key] for r in self.records], dtype=np.int64)

    def metadata(self) -> list[dict[str, Any]]:
        """Every item's metadata (no audio), as copies."""
        return [dict(r) for r in self.records]

    def column(self, key: str) -> list[Any]:
        return [r.get(key) for r in self.records]

    def class_counts(self) -> dict[str, int]:
        labs = self.labels()
        return {name: int((labs == k).sum()) for k, name in enumerate(self.label_names)}

    def materialize(self, progress: bool = False) -> LabelledDataset:
        """Load every item's audio into memory (returns ``self``)."""
        for i in _progress(range(len(self)), progress, "loading audio"):
            if not isinstance(self._audio[i], np.ndarray):
                self._audio[i] = self._load(i)
        return self

    def __repr__(self) -> str:
        return (f"LabelledDataset({len(self)} items, {self.label_key}: {self.class_counts()}, "
                f"id={self.dataset_id!r})")

    # -- disk ----------------------------------------------------------------------------
    def save(self, folder: str | Path, progress: bool = False) -> Path:
        """Write ``clips/NNNNN.wav`` (float32 wav: bit-exact round trip), ``manifest.json``
        (id, label names, label key, every record with its file) and ``metadata.csv``."""
        import soundfile as sf

        folder = Path(folder)
        (folder / "clips").mkdir(parents=True, exist_ok=True)
        items = []
        for i in _progress(range(len(self)), progress, "saving"):
            rel = f"clips/{i:05d}.wav"
            sf.write(str(folder / rel), self._load(i), SAMPLE_RATE, subtype="FLOAT")
            items.append({**self.records[i], "file": rel})
        manifest = {"format": "hooked_asr.LabelledDataset/1", "dataset_id": self.dataset_id,
                    "label_key": self.label_key, "label_names": self.label_names, "sample_rate": SAMPLE_RATE,
                    "items": items}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
        keys: list[str] = []
        for r in items:
            keys += [k for k in r if k not in keys]
        with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(items)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> LabelledDataset:
        """Read a folder written by :meth:`save`; audio is read lazily, item by item."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: not a folder written by LabelledDataset.save")
        m = json.loads(path.read_text())
        records, audio = [], []
        for r in m["items"]:
            r = dict(r)
            audio.append(folder / r.pop("file"))
            records.append(r)
        return cls(records, audio, m["label_names"], m["dataset_id"], m.get("label_key", "label"))


# ---- helpers -------------------------------------------------------------------------
def _progress(it: Iterable, enabled: bool, desc: str, total: int | None = None) -> Iterable:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, leave=False)


def _digest(obj: Any, audio: Sequence[np.ndarray] = ()) -> str:
    h = hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode())
    for a in audio:
        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return h.hexdigest()[:12]


def _check_n(n_per_class: int) -> int:
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class must be an integer >= 1, got {n_per_class!r}")
    return int(n_per_class)


def _check_choices(what: str, given: Sequence[str], valid: Iterable[str]) -> list[str]:
    valid = list(valid)
    if isinstance(given, str):
        given = [given]
    given = list(given)
    bad = [g for g in given if g not in valid]
    if bad:
        raise ValueError(f"unknown {what} {', '.join(map(repr, bad))}; valid: {', '.join(valid)}")
    if len(set(given)) != len(given):
        raise ValueError(f"{what}s repeat: {given}")
    if len(given) < 2:
        raise ValueError(f"a labelled dataset needs at least two {what}s, got {given}")
    return given


def _check_voices(voices: Sequence[str]) -> list[str]:
    from hooked_asr.datasets.espeak import list_voices

    known = set(list_voices())
    voices = [voices] if isinstance(voices, str) else list(voices)
    bad = [v for v in voices if v.split("+")[0] not in known]
    if bad or not voices:
        raise ValueError(f"unknown espeak-ng voice(s) {bad or voices}; valid: {', '.join(sorted(known))} "
                         "(add a variant like '+f3' or '+m3')")
    return voices


def _speak(text: str, voice: str, rate: int, pitch: int | None) -> np.ndarray:
    from hooked_asr.datasets.espeak import synthesize

    return synthesize(text, voice=voice, rate=rate, pitch=pitch)


def _params_str(params: Mapping[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(map(str, v)) + "]"
        return str(v)

    return ",".join(f"{k}={fmt(v)}" for k, v in params.items())


def _finish(name: str, params: Mapping[str, Any], records: list[dict[str, Any]], audio: list[np.ndarray],
            label_names: Sequence[str], label_key: str = "label") -> LabelledDataset:
    """Audio to float32, durations into records, id = builder(params)@digest(content)."""
    audio = [np.asarray(a, dtype=np.float32) for a in audio]
    for r, a in zip(records, audio):
        r["seconds"] = round(a.size / SAMPLE_RATE, 4)
    did = f"{name}({_params_str(params)})@{_digest(records, audio)}"
    return LabelledDataset(records, audio, label_names, did, label_key)


def _rates(rng: np.random.Generator, n: int, rate_range: tuple[int, int]) -> list[int]:
    lo, hi = rate_range
    if not 80 <= lo <= hi <= 450:
        raise ValueError(f"rate_range must be (lo, hi) words per minute with 80 <= lo <= hi <= 450, got {rate_range}")
    return [int(x) for x in rng.integers(lo, hi + 1, size=n)]


def _render(specs: list[dict[str, Any]], progress: bool, desc: str) -> list[np.ndarray]:
    return [_speak(s["text"], s["voice"], s["rate"], s.get("pitch")) for s in _progress(specs, progress, desc)]


# ---- builders ------------------------------------------------------------------------
def gender_dataset(
    n_per_class: int, seed: int = 0, voices: Sequence[str] = DEFAULT_VOICES,
    rate_range: tuple[int, int] = (140, 190), sentences: Sequence[str] = SENTENCES, progress: bool = True,
) -> LabelledDataset:
    """espeak-ng male vs female variants of several voices: label 0 = male, 1 = female.

    Pair ``j`` shares sentence, base voice and speaking rate; the male item uses a random
    male variant (the voice's default or ``+m1``..``+m7``, F0 ~ 95-110 Hz), the female item
    a random ``+f1``..``+f5`` (F0 ~ 180-215 Hz).
    """
    n = _check_n(n_per_class)
    voices = _check_voices(voices)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sentences))
    rates = _rates(rng, n, rate_range)
    records = []
    for j in range(n):
        sid = int(order[j % len(order)])
        base = voices[int(rng.integers(len(voices)))]
        variants = (MALE_VARIANTS[int(rng.integers(len(MALE_VARIANTS)))],
                    FEMALE_VARIANTS[int(rng.integers(len(FEMALE_VARIANTS)))])
        for label, name in enumerate(("male", "female")):
            records.append({"label": label, "label_name": name, "text": sentences[sid], "voice": base + variants[label],
                            "base_voice": base, "rate": rates[j], "sentence_id": sid, "pair": j})
    audio = _render(records, progress, "gender_dataset")
    return _finish("gender_dataset", {"n_per_class": n, "seed": seed, "voices": voices, "rate_range": rate_range},
                   records, audio, ["male", "female"])


def accent_dataset(
    accents: Sequence[str] = ("en-us", "en-gb", "en-gb-scotland", "en-029"), n_per_class: int = 50, seed: int = 0,
    rate_range: tuple[int, int] = (140, 190), variants: Sequence[str] = MALE_VARIANTS + FEMALE_VARIANTS,
    sentences: Sequence[str] = SENTENCES, progress: bool = True,
) -> LabelledDataset:
    """English accents as espeak-ng voices (label ``k`` = ``accents[k]``; ``"en-gb"`` is
    espeak's ``en``). Group ``j`` shares sentence, rate and voice variant across accents."""
    accents = _check_choices("accent", accents, ACCENT_VOICES)
    n = _check_n(n_per_class)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sentences))
    rates = _rates(rng, n, rate_range)
    records = []
    for j in range(n):
        sid = int(order[j % len(order)])
        var = variants[int(rng.integers(len(variants)))]
        for label, acc in enumerate(accents):
            records.append({"label": label, "label_name": acc, "text": sentences[sid], "voice": ACCENT_VOICES[acc] + var,
                            "variant": var or "default", "rate": rates[j], "sentence_id": sid, "group": j})
    audio = _render(records, progress, "accent_dataset")
    return _finish("accent_dataset", {"accents": accents, "n_per_class": n, "seed": seed, "rate_range": rate_range},
                   records, audio, accents)


def language_dataset(
    languages: Sequence[str] = ("en", "de", "fr", "es"), n_per_class: int = 16, seed: int = 0,
    rate_range: tuple[int, int] = (140, 180), variants: Sequence[str] = MALE_VARIANTS + FEMALE_VARIANTS,
    progress: bool = True,
) -> LabelledDataset:
    """Spoken language (label ``k`` = ``languages[k]``) from :data:`LANGUAGE_SENTENCES`,
    sixteen parallel sentences (translations of one another) per language. Group ``j``
    says the same sentence (translated) with the same rate and voice variant in every
    language; beyond 16 per class sentences repeat with other variants and rates."""
    languages = _check_choices("language", languages, LANGUAGE_SENTENCES)
    n = _check_n(n_per_class)
    rng = np.random.default_rng(seed)
    n_sent = len(LANGUAGE_SENTENCES["en"])
    order = rng.permutation(n_sent)
    rates = _rates(rng, n, rate_range)
    records = []
    for j in range(n):
        sid = int(order[j % n_sent])
        var = variants[int(rng.integers(len(variants)))]
        for label, lang in enumerate(languages):
            records.append({"label": label, "label_name": lang, "text": LANGUAGE_SENTENCES[lang][sid],
                            "voice": LANGUAGE_VOICES[lang] + var, "rate": rates[j], "sentence_id": sid, "group": j})
    audio = _render(records, progress, "language_dataset")
    return _finish("language_dataset", {"languages": languages, "n_per_class": n, "seed": seed}, records, audio,
                   languages)


def _random_voice(rng: np.random.Generator, voices: Sequence[str]) -> str:
    var = (MALE_VARIANTS + FEMALE_VARIANTS)[int(rng.integers(len(MALE_VARIANTS) + len(FEMALE_VARIANTS)))]
    return voices[int(rng.integers(len(voices)))] + var


def speech_nonspeech_dataset(
    n_per_class: int, seed: int = 0, kinds: Sequence[str] = NONSPEECH_KINDS, voices: Sequence[str] = DEFAULT_VOICES,
    rate_range: tuple[int, int] = (140, 190), progress: bool = True,
) -> LabelledDataset:
    """Label 1 = speech (a sentence, random voice and variant), 0 = non-speech of the same
    duration as its paired speech item (``kinds`` cycled in a seeded order: noise colours,
    tones, chirps, synthetic music; each run of ``len(kinds)`` pairs holds every kind once).
    Speech keeps espeak's level; non-speech peaks at a
    level drawn uniformly in [0.2, 0.8]."""
    n = _check_n(n_per_class)
    kinds = list(kinds)
    for k in kinds:
        if k not in NONSPEECH_KINDS:
            raise ValueError(f"unknown non-speech kind {k!r}; valid kinds: {', '.join(NONSPEECH_KINDS)}")
    voices = _check_voices(voices)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(SENTENCES))
    rates = _rates(rng, n, rate_range)
    if not kinds:
        raise ValueError(f"kinds is empty; valid kinds: {', '.join(NONSPEECH_KINDS)}")
    # every block of len(kinds) consecutive pairs holds each kind once, in a seeded order
    kind_order = [kinds[int(k)] for _ in range(-(-n // len(kinds))) for k in rng.permutation(len(kinds))][:n]
    records, audio = [], []
    for j in _progress(range(n), progress, "speech_nonspeech_dataset"):
        sid = int(order[j % len(order)])
        voice = _random_voice(rng, voices)
        speech = _speak(SENTENCES[sid], voice, rates[j], None)
        clip_seed = int(rng.integers(2**31))
        peak = float(rng.uniform(0.2, 0.8))
        other = nonspeech_clip(kind_order[j], speech.size / SAMPLE_RATE, clip_seed, peak=peak)[: speech.size]
        records.append({"label": 0, "label_name": "nonspeech", "kind": kind_order[j], "text": "", "voice": "",
                        "pair": j, "clip_seed": clip_seed})
        audio.append(other)
        records.append({"label": 1, "label_name": "speech", "kind": "speech", "text": SENTENCES[sid], "voice": voice,
                        "pair": j, "clip_seed": -1})
        audio.append(speech)
    return _finish("speech_nonspeech_dataset", {"n_per_class": n, "seed": seed, "kinds": kinds}, records, audio,
                   ["nonspeech", "speech"])


def noisy_dataset(
    n_per_class: int, snr_db: float = 5.0, seed: int = 0, noise_kinds: Sequence[str] = ("white", "pink", "brown"),
    voices: Sequence[str] = DEFAULT_VOICES, rate_range: tuple[int, int] = (140, 190), progress: bool = True,
) -> LabelledDataset:
    """The same utterances clean (label 0) and with noise at ``snr_db`` (label 1).

    Pair ``j``: one sentence said by one voice; the noisy copy adds noise of a kind from
    ``noise_kinds`` (seeded) with :func:`mix_at_snr` (scaled down together only if the
    mixture would clip)."""
    n = _check_n(n_per_class)
    if not isinstance(snr_db, (int, float, np.integer, np.floating)) or not math.isfinite(float(snr_db)):
        raise ValueError(f"snr_db must be a finite number of dB, got {snr_db!r}")
    for k in noise_kinds:
        if k not in NONSPEECH_KINDS:
            raise ValueError(f"unknown noise kind {k!r}; valid kinds: {', '.join(NONSPEECH_KINDS)}")
    if not noise_kinds:
        raise ValueError(f"noise_kinds is empty; valid kinds: {', '.join(NONSPEECH_KINDS)}")
    voices = _check_voices(voices)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(SENTENCES))
    rates = _rates(rng, n, rate_range)
    records, audio = [], []
    for j in _progress(range(n), progress, "noisy_dataset"):
        sid = int(order[j % len(order)])
        voice = _random_voice(rng, voices)
        kind = noise_kinds[int(rng.integers(len(noise_kinds)))]
        clip_seed = int(rng.integers(2**31))
        clean = _speak(SENTENCES[sid], voice, rates[j], None)
        noisy = mix_at_snr(clean, nonspeech_clip(kind, clean.size / SAMPLE_RATE, clip_seed), float(snr_db))
        base = {"text": SENTENCES[sid], "voice": voice, "rate": rates[j], "sentence_id": sid, "pair": j,
                "clip_seed": clip_seed}
        records.append({"label": 0, "label_name": "clean", "noise": "none", **base})
        audio.append(clean)
        records.append({"label": 1, "label_name": "noisy", "noise": kind, **base})
        audio.append(noisy)
    return _finish("noisy_dataset", {"n_per_class": n, "snr_db": float(snr_db), "seed": seed,
                                     "noise_kinds": list(noise_kinds)}, records, audio, ["clean", "noisy"])


def semantic_dataset(
    categories: Sequence[str] = ("fruits", "clothing"), n_per_class: int = 12, seed: int = 0,
    carrier: str | Sequence[str] = "I really like the {word}.", voice: str = "en-us", rate: int = 160,
    progress: bool = True,
) -> LabelledDataset:
    """Word category (label ``k`` = ``categories[k]``) in fixed carrier sentences.

    Everything but the word is fixed: one voice, one rate, the carrier text(s). Items are
    distinct (word, carrier) combinations drawn without replacement by ``seed``; with one
    carrier at most ``len(CATEGORY_WORDS[c])`` (16) per class. ``carrier`` may be a list
    of templates (each with ``{word}``) to allow more items."""
    cats = [_CATEGORY_ALIASES.get(c, c) for c in ([categories] if isinstance(categories, str) else categories)]
    cats = _check_choices("category", cats, CATEGORY_WORDS)
    n = _check_n(n_per_class)
    carriers = [carrier] if isinstance(carrier, str) else list(carrier)
    for c in carriers:
        if c.count("{word}") != 1:
            raise ValueError(f"carrier {c!r} must contain '{{word}}' exactly once")
    _check_voices([voice])
    rng = np.random.default_rng(seed)
    picks = {}
    for c in cats:
        combos = [(w, t) for t in range(len(carriers)) for w in CATEGORY_WORDS[c]]
        if n > len(combos):
            raise ValueError(f"category {c!r} has {len(CATEGORY_WORDS[c])} words x {len(carriers)} carrier(s) = "
                             f"{len(combos)} distinct items; n_per_class={n} is too many (pass more carriers)")
        picks[c] = [combos[int(i)] for i in rng.permutation(len(combos))[:n]]
    records = []
    for j in range(n):
        for label, c in enumerate(cats):
            word, t = picks[c][j]
            records.append({"label": label, "label_name": c, "word": word, "carrier": carriers[t],
                            "text": carriers[t].format(word=word), "voice": voice, "rate": int(rate), "group": j})
    audio = _render(records, progress, "semantic_dataset")
    return _finish("semantic_dataset", {"categories": cats, "n_per_class": n, "seed": seed, "carrier": carriers,
                                        "voice": voice, "rate": rate}, records, audio, cats)


# ---- hallucination -------------------------------------------------------------------
HALLUCINATION_KINDS = ("clean", "noisy", "truncated", "silence_padded", "fast", "repeated")


def hallucination_prone_inputs(
    n_per_kind: int = 10, seed: int = 0, kinds: Sequence[str] = HALLUCINATION_KINDS,
    voices: Sequence[str] = DEFAULT_VOICES, snr_range: tuple[float, float] = (-12.0, -3.0), clean_voice: str = "en-us",
    progress: bool = True,
) -> LabelledDataset:
    """Inputs on which small Whisper models often go wrong, with exact references.

    Kinds (label ``k`` = ``kinds[k]``, ``text`` = what was said):

    - ``clean``: a sentence at a normal rate in ``clean_voice`` (the baseline that supplies
      most WER-0 items; the other kinds draw a random voice and variant from ``voices``).
    - ``noisy``: a sentence in white/pink/brown noise at an SNR drawn from ``snr_range``.
    - ``truncated``: only the first 2-4 words of a sentence, spoken alone (models tend to
      complete or invent the rest).
    - ``silence_padded``: a sentence followed by 12-25 s of silence (models invent words in silence).
    - ``fast``: a sentence at 380-450 words per minute.
    - ``repeated``: one word said 8-20 times (models lose count or loop).
    """
    n = _check_n(n_per_kind)
    kinds = list(kinds)
    for k in kinds:
        if k not in HALLUCINATION_KINDS:
            raise ValueError(f"unknown kind {k!r}; valid kinds: {', '.join(HALLUCINATION_KINDS)}")
    if not kinds:
        raise ValueError(f"kinds is empty; valid kinds: {', '.join(HALLUCINATION_KINDS)}")
    voices = _check_voices(voices)
    _check_voices([clean_voice])
    lo, hi = snr_range
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"snr_range must be finite (lo, hi) dB with lo <= hi, got {snr_range}")
    rng = np.random.default_rng(seed)
    records, audio = [], []
    for j in _progress(range(n), progress, "hallucination_prone_inputs"):
        for label, kind in enumerate(kinds):
            sentence = SENTENCES[int(rng.integers(len(SENTENCES)))]
            voice = _random_voice(rng, voices)
            rate = int(rng.integers(150, 181))
            if kind == "clean":
                voice = clean_voice
            snr, noise_kind = float("nan"), "none"
            extra_s = 0.0
            text = sentence
            if kind == "truncated":
                words = sentence.split()
                text = " ".join(words[: int(rng.integers(2, 5))]).rstrip(",.?!")
            elif kind == "fast":
                rate = int(rng.integers(380, 451))
            elif kind == "repeated":
                text = " ".join([REPEAT_WORDS[int(rng.integers(len(REPEAT_WORDS)))]] * int(rng.integers(8, 21)))
            a = _speak(text, voice, rate, None)
            if kind == "noisy":
                snr = float(rng.uniform(lo, hi))
                noise_kind = ("white", "pink", "brown")[int(rng.integers(3))]
                a = mix_at_snr(a, nonspeech_clip(noise_kind, a.size / SAMPLE_RATE, int(rng.integers(2**31))), snr)
            elif kind == "silence_padded":
                extra_s = float(rng.uniform(12.0, 25.0))
                lead = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
                a = np.concatenate([lead, a, np.zeros(int(extra_s * SAMPLE_RATE), np.float32)])[: 30 * SAMPLE_RATE]
            records.append({"label": label, "label_name": kind, "kind": kind, "text": text, "voice": voice, "rate": rate,
                            "noise": f"{noise_kind}@{snr:.1f}dB" if kind == "noisy" else "none",
                            "padding_s": round(extra_s, 3), "group": j})
            audio.append(a)
    return _finish("hallucination_prone_inputs", {"n_per_kind": n, "seed": seed, "kinds": kinds,
                                                  "snr_range": snr_range}, records, audio, kinds)


def _text_of(result: Any) -> str:
    if isinstance(result, str):
        return result
    text = getattr(result, "text", None)
    if text is None and isinstance(result, Mapping):
        text = result.get("text")
    if text is None:
        raise TypeError(f"transcribe returned {type(result).__name__}; expected an object with .text or a str")
    return str(text)


def transcribe_all(model: Any, clips: Sequence[np.ndarray], batch_size: int = 8, progress: bool = True,
                   **transcribe_kwargs: Any) -> list[str]:
    """``model.transcribe`` over ``clips`` in batches (a list in, a list out); the texts."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts: list[str] = []
    for b in _progress(range(0, len(clips), batch_size), progress, "transcribing",
                       total=-(-len(clips) // batch_size)):
        batch = [np.asarray(c, dtype=np.float32) for c in clips[b : b + batch_size]]
        out = model.transcribe(batch, **transcribe_kwargs)
        if not isinstance(out, (list, tuple)):
            out = [out]
        if len(out) != len(batch):
            raise ValueError(f"model.transcribe returned {len(out)} results for a batch of {len(batch)}")
        texts += [_text_of(r) for r in out]
    return texts


def hallucination_dataset(
    model: Any,
    clips_or_dataset: Sequence[Any],
    references: Sequence[str] | None = None,
    n_per_class: int | None = None,
    min_wer: float = 0.5,
    max_length_diff: int | None = 2,
    batch_size: int = 8,
    max_new_tokens: int | None = 128,
    strict: bool = False,
    n_wrong: int | None = None,
    progress: bool = True,
    **transcribe_kwargs: Any,
) -> LabelledDataset:
    """Correct (label 0, WER == 0) vs hallucinated (label 1, highest WER) transcripts.

    ``clips_or_dataset``: 1-D arrays at 16 kHz, or dict items with ``audio`` (and ``text``,
    used as the reference when ``references`` is None; their other metadata is kept, a
    source ``label``/``label_name`` renamed ``source_label``/``source_label_name``).
    Every clip is transcribed with ``model.transcribe`` (greedy; ``max_new_tokens``
    and ``transcribe_kwargs`` passed on) and scored with
    :func:`hooked_asr.text.word_error_rate` against its reference.

    Matching on reference length: candidates for label 1 are the clips with
    ``WER >= min_wer``, taken in order of decreasing WER (ties: lower index first). Each
    takes the still-unused zero-WER clip whose reference has the closest number of words
    (ties: closest number of characters, then lower index), if that difference is at most
    ``max_length_diff`` words (None: any); a candidate with no such partner is skipped.
    This stops at ``n_per_class`` pairs (None: as many as possible). So the two groups
    have (nearly) the same reference-length distribution and a probe cannot win by
    reading length. Fewer pairs than asked: a warning (an error with ``strict``).

    ``n_wrong`` (default ``n_per_class``): label-1 items wanted, for unequal classes as in
    [BT] §4.2 (150 zero-WER, 200 highest-WER: ``n_per_class=150, n_wrong=200``). The
    extra ones are the next highest-WER clips, each matched in length to an already
    paired zero-WER clip (reused), so the length distributions stay matched.

    Items come pair by pair (label 0 then 1) with ``text`` (reference), ``transcript``,
    ``wer``, ``ref_words``, ``pair`` and ``source_index``, then the extra label-1 items
    (``pair`` = the pair of the zero-WER clip they were matched to).
    """
    if n_wrong is not None and (n_per_class is None or n_wrong < n_per_class):
        raise ValueError(f"n_wrong={n_wrong} needs n_per_class set and n_wrong >= n_per_class ({n_per_class})")
    if n_per_class is not None:
        _check_n(n_per_class)
    if not 0 < min_wer:
        raise ValueError(f"min_wer must be > 0, got {min_wer}")
    items = [c for c in clips_or_dataset] if not isinstance(clips_or_dataset, LabelledDataset) else None
    if items is None:  # a LabelledDataset: keep its metadata
        ds = clips_or_dataset
        clips = [ds[i]["audio"] for i in _progress(range(len(ds)), False, "")]
        metas = ds.metadata()
    else:
        clips, metas = [], []
        for i, c in enumerate(items):
            if isinstance(c, Mapping):
                if "audio" not in c:
                    raise TypeError(f"item {i} is a dict without an 'audio' key")
                clips.append(c["audio"])
                metas.append({k: v for k, v in c.items() if k != "audio"})
            else:
                clips.append(c)
                metas.append({})
    if references is None:
        missing = [i for i, m in enumerate(metas) if not isinstance(m.get("text"), str)]
        if missing:
            raise ValueError(f"no references given and items {missing[:5]} carry no 'text'; pass references=[...]")
        references = [m["text"] for m in metas]
    references = list(references)
    if len(references) != len(clips):
        raise ValueError(f"{len(clips)} clips but {len(references)} references: give one reference per clip")
    if not clips:
        raise ValueError("no clips given")
    from hooked_asr.text import normalize_text, word_error_rate

    kw = dict(transcribe_kwargs)
    if max_new_tokens is not None:
        kw["max_new_tokens"] = max_new_tokens
    hyps = transcribe_all(model, clips, batch_size, progress, **kw)
    wers = [word_error_rate(r, h) for r, h in zip(references, hyps)]
    n_words = [len(normalize_text(r).split()) for r in references]
    n_chars = [len(normalize_text(r)) for r in references]
    zero = [i for i, w in enumerate(wers) if w == 0.0]
    high = sorted((i for i, w in enumerate(wers) if w >= min_wer), key=lambda i: (-wers[i], i))
    used: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for h in high:
        if n_per_class is not None and len(pairs) >= n_per_class:
            break
        free = [z for z in zero if z not in used]
        if not free:
            break
        z = min(free, key=lambda z: (abs(n_words[z] - n_words[h]), abs(n_chars[z] - n_chars[h]), z))
        if max_length_diff is not None and abs(n_words[z] - n_words[h]) > max_length_diff:
            continue
        used.add(z)
        pairs.append((z, h))
    summary = (f"{len(clips)} clips: {len(zero)} with WER 0, {len(high)} with WER >= {min_wer}; "
               f"{len(pairs)} length-matched pairs")
    if not pairs:
        raise ValueError(f"no zero-WER / high-WER pairs could be formed ({summary}); give more or harder clips, "
                         "lower min_wer or raise max_length_diff")
    if n_per_class is not None and len(pairs) < n_per_class:
        msg = f"asked for {n_per_class} per class, got {len(pairs)} ({summary})"
        if strict:
            raise ValueError(msg)
        warnings.warn(msg, stacklevel=2)
    extras: list[tuple[int, int]] = []  # (pair index of the reused zero-WER clip, high-WER clip)
    if n_wrong is not None and n_wrong > len(pairs) and pairs:
        taken = {h for _, h in pairs}
        for h in high:
            if len(pairs) + len(extras) >= n_wrong:
                break
            if h in taken:
                continue
            p = min(range(len(pairs)), key=lambda q: (abs(n_words[pairs[q][0]] - n_words[h]),
                                                      abs(n_chars[pairs[q][0]] - n_chars[h]), q))
            if max_length_diff is not None and abs(n_words[pairs[p][0]] - n_words[h]) > max_length_diff:
                continue
            taken.add(h)
            extras.append((p, h))
        if len(pairs) + len(extras) < n_wrong:
            msg = f"asked for {n_wrong} high-WER items, got {len(pairs) + len(extras)} ({summary})"
            if strict:
                raise ValueError(msg)
            warnings.warn(msg, stacklevel=2)
    records, audio = [], []
    order = [(p, label, i) for p, (z, h) in enumerate(pairs) for label, i in ((0, z), (1, h))]
    for p, label, i in order + [(p, 1, h) for p, h in extras]:
        meta = {("source_" + k if k in ("label", "label_name") else k): v for k, v in metas[i].items()
                if isinstance(v, (str, int, float, bool, np.integer, np.floating))}
        meta.update({"label": label, "label_name": ("correct", "hallucination")[label], "text": references[i],
                     "transcript": hyps[i], "wer": float(wers[i]), "ref_words": n_words[i], "pair": p,
                     "source_index": i})
        records.append(meta)
        audio.append(np.asarray(clips[i], dtype=np.float32))
    src = getattr(clips_or_dataset, "dataset_id", None) or _digest(references, [np.asarray(c) for c in clips])
    model_id = getattr(getattr(model, "cfg", None), "name", None) or type(model).__name__
    return _finish("hallucination_dataset", {"source": src, "model": model_id, "n_per_class": n_per_class,
                                             "n_wrong": n_wrong, "min_wer": min_wer, "max_length_diff": max_length_diff,
                                             **{k: v for k, v in sorted(kw.items())}},
                   records, audio, ["correct", "hallucination"])


__all__ = [
    "ACCENT_VOICES",
    "CATEGORY_WORDS",
    "FEMALE_VARIANTS",
    "HALLUCINATION_KINDS",
    "LANGUAGE_SENTENCES",
    "LANGUAGE_VOICES",
    "LabelledDataset",
    "MALE_VARIANTS",
    "SENTENCES",
    "accent_dataset",
    "gender_dataset",
    "hallucination_dataset",
    "hallucination_prone_inputs",
    "language_dataset",
    "noisy_dataset",
    "semantic_dataset",
    "speech_nonspeech_dataset",
    "transcribe_all",
]
