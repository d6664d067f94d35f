"""The demo corpus the tiny recipe trains on, generated offline and deterministically.

Why it exists: the toy-scale rehearsal must run end to end with no network and no hub, yet a
toy model trained on it has to *learn* something — its loss should fall steadily, deduplication
should find real near-duplicates, and an SFT'd model should answer checkable prompts. So the
text is not lorem ipsum: it is built from grammars over sizeable word lists, about one invented
but consistent world (towns, rivers, crafts, people) whose facts recur in different phrasings in
prose, forum threads and chats.

Six sources, each a folder of JSONL shards:

- prose: encyclopedic, how-to and story paragraphs; PROSE_NEAR_DUPLICATE_RATE of them are
  near-copies of an earlier prose document (for MinHash deduplication to remove);
- forum: Q&A threads (question, 1-3 answers, usernames, votes);
- arithmetic: multi-step word problems with worked steps ending in "The answer is N.";
- python_functions: small functions with docstrings (doctests computed by running them);
- chats: short instruction-like conversations in the smol-smoltalk `messages` format;
- preferences: pairs for preference alignment after SFT (DPO/ORPO), in the layout of
  ultrafeedback_binarized's train_prefs: a chats-like prompt, a right answer ("chosen") and one
  that is wrong, runs on past where it should stop, or ignores the asked format ("rejected").

Record i of a source depends only on (source, seed, i), never on how many are generated, so a
bigger corpus extends a smaller one. The world itself is fixed (WORLD_SEED), so facts do not
change with the corpus seed and evaluation prompts can rely on them.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

from smolrecipe.atomic import staged_folder, write_file

SOURCES = ("prose", "forum", "arithmetic", "python_functions", "chats", "preferences")

# At scale 1.0: prose ~250k, forum/arithmetic/python ~120k "tokens" each (characters / 4), 3000 chats,
# 1600 preference pairs.
DEFAULT_DOCUMENTS: dict[str, int] = {
    "prose": 1150,
    "forum": 960,
    "arithmetic": 2400,
    "python_functions": 1030,
    "chats": 3000,
    "preferences": 1600,
}

# Fraction of prose documents that copy an earlier (original) prose document with one or two
# adjectives changed or one sentence appended: enough for MinHash deduplication to have real work
# at every scale. Near-copies keep a word 5-gram Jaccard of about 0.8-0.95 with their original;
# originals stay below about 0.3 with each other.
PROSE_NEAR_DUPLICATE_RATE = 0.05

WORLD_SEED = 1729
# Bumped whenever generation changes, so a cached corpus made by an older generator is rebuilt.
GENERATOR_VERSION = 15
# A small world, so every fact recurs often enough for a ~1M-parameter model to learn it in minutes:
# 16 towns (two per region) and 24 people. One town in four, and one person in four, is held out:
# the SFT chats and the preference pairs never ask about them, so the world-knowledge suite
# (world_qa.jsonl) asks what the model can only have learned from pretraining text.
N_TOWNS = 16
N_PEOPLE = 24
HELDOUT_EVERY = 4
QA_FILE = "world_qa.jsonl"
MANIFEST = "corpus.json"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _phrases(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


# --------------------------------------------------------------------------------------------
# Lexicon
# --------------------------------------------------------------------------------------------

# Adjectives by what they can describe, so people get character traits and roads get weather.
PERSON_ADJECTIVES = _words("""
patient careful clever stubborn cheerful gloomy sleepy lively proud humble honest loyal bold shy
curious restless calm generous thrifty modest kindly gruff nimble clumsy stern merry weary hopeful
grateful anxious eager cautious sensible quiet gentle fierce wise polite brave timid cheeky jolly
solemn earnest diligent idle fussy easygoing cunning trusting sharp talkative reserved hardworking
""")
THING_ADJECTIVES = _words("""
old heavy light rough smooth sturdy fragile tall short long wide round square hollow painted carved
woven glazed rusty wooden iron copper brass woollen linen leather simple elaborate ornate plain
worn polished faded crooked straight cracked dented shiny tiny huge small large battered handsome
delicate chipped patched mended lopsided gleaming brittle supple thick thin coarse fine precious
cheap costly rare unusual ordinary peculiar splendid shabby neat sturdy antique blue red green
""")
PLACE_ADJECTIVES = _words("""
quiet busy narrow broad steep gentle dusty muddy misty windy sunny cold warm damp dry green rocky
sandy grassy marshy wooded frozen flooded sheltered exposed fertile barren cobbled crowded empty
hidden remote bustling sleepy forgotten shadowy sunlit moonlit foggy icy breezy winding lonely
peaceful noisy overgrown leafy open wild mossy thatched whitewashed timbered crumbling spacious
cramped cosy quaint rustic lofty low flat hilly ancient famous celebrated
""")
STATE_ADJECTIVES = _words("soft firm smooth dry damp even supple springy tight loose warm cool glossy pliable stiff brittle "
                          "sticky crumbly lumpy uneven cracked dull limp")
WEATHER_ADJECTIVES = _words("cold warm bright grey misty windy sunny foggy damp clear frosty still rainy golden pale")
FOOD_ADJECTIVES = _words("fresh stale sweet bitter salty sour fragrant ripe tender crisp hearty spicy savoury smoky tart mellow "
                         "rich plain warm")
ADJECTIVES = tuple(dict.fromkeys(PERSON_ADJECTIVES + THING_ADJECTIVES + PLACE_ADJECTIVES + FOOD_ADJECTIVES + STATE_ADJECTIVES
                                 + WEATHER_ADJECTIVES + _words(
    "early late seasonal distant nearby northern southern eastern western upper lower inner outer central coastal inland "
    "golden silver grey amber pale dark bright dim vivid weathered blooming withered endless brief")))

COLOURS = _words("""
red blue green yellow white black grey brown amber ochre russet crimson scarlet indigo violet
teal olive saffron copper silver golden ivory cream rust plum slate charcoal sage mustard
""")

OBJECTS = _words("""
basket lantern jug bowl rope net barrel cart bucket ladder bench chair table cupboard chest
blanket quilt rug cloak scarf glove boot hat bell clock candle kettle pot pan ladle spoon plate
cup mug bottle jar crate sack trunk wheel spindle loom needle thimble button ribbon brooch ring
necklace mirror comb brush broom mop stool cradle lamp shutter gate fence post sign flag banner
map book letter ledger parcel box tin pouch satchel purse coin key lock hinge nail plank beam
tile brick stone pebble shell feather bone horn drum flute fiddle whistle kite sail oar anchor
hook lure paddle canoe raft sledge wagon saddle bridle harness collar leash kennel coop hive
trough bellows anvil chisel hammer saw axe spade rake hoe sickle scythe pitchfork shovel trowel
wheelbarrow sieve funnel churn mould vat kiln oven hearth chimney window door step doorway
""")

PLACES = _phrases("""
square, bridge, mill, harbour, chapel, market hall, orchard, bakery, smithy, tannery, brewery,
inn, tavern, school, library, town hall, quay, boathouse, granary, watermill, windmill, ferry landing,
almshouse, bathhouse, clock tower, courthouse, guildhall, warehouse, stables, dye works, rope walk,
pottery yard, fish market, cattle market, wool exchange, toll house, lighthouse, signal tower,
old fort, city wall, north gate, south gate, east gate, west gate, riverside walk, botanical garden,
village green, bowling green, cricket field, common, allotments, cemetery, almond grove, herb garden
""")

LANDSCAPE = _words("""
hill meadow marsh wood valley cliff moor heath ridge ford spring pond lake stream brook gorge
ravine cave glade copse thicket dune beach cove bay headland island estuary delta plain plateau
fen bog pasture orchard vineyard quarry knoll hollow crag tor fell scree waterfall rapids shoal
""")

ANIMALS = _words("""
fox badger otter heron swan goose duck hen rooster goat sheep cow horse donkey mule pig dog cat
hare rabbit hedgehog squirrel mole vole owl hawk falcon kestrel crow raven magpie sparrow wren
robin finch lark swallow pigeon trout salmon pike eel carp perch bream frog toad newt deer stag
boar beaver weasel stoat bee wasp moth beetle snail
""")
LIVESTOCK = _words("goats sheep cows hens geese ducks pigs donkeys bees rabbits")
BIRDS = _words("heron swan goose duck owl hawk falcon kestrel crow raven magpie sparrow wren robin finch lark swallow pigeon")
FISH = _words("trout salmon pike eel carp perch bream")

PLANTS = _words("""
oak ash elm beech birch willow alder hazel holly yew pine larch rowan hawthorn blackthorn elder
lime maple poplar chestnut walnut cherry apple pear plum quince fig olive vine ivy fern heather
gorse bracken thistle nettle clover daisy buttercup primrose bluebell foxglove poppy cornflower
lavender rosemary thyme sage mint sorrel rush reed sedge moss lichen
""")
TREES = _words("oak ash elm beech birch willow alder hazel holly yew pine larch rowan hawthorn lime maple poplar chestnut walnut")
FRUITS = _words("apple pear plum cherry quince fig grape peach apricot lemon orange melon strawberry raspberry blackberry "
                "gooseberry damson")
VEGETABLES = _words("carrot onion leek turnip parsnip cabbage potato pea bean beetroot radish lettuce celery garlic pumpkin "
                    "marrow kale spinach")

FOODS = _phrases("""
barley bread, rye loaves, oat cakes, honey cakes, apple pie, plum tart, pear crumble, fish stew,
smoked eel, salted herring, goat cheese, sheep cheese, butter, cream, buttermilk, pea soup,
leek soup, onion broth, mutton pie, rabbit stew, roast goose, pickled cabbage, baked apples,
walnut bread, cherry jam, quince jelly, elderflower cordial, cider, ale, mead, porridge,
barley cakes, seed buns, herb dumplings, fried trout, mushroom pie, chestnut soup, spiced wine
""")

ROLES = _words("""
farmer miller fisher weaver potter baker smith merchant traveller shepherd carpenter teacher
ferryman innkeeper brewer tanner cooper chandler glazier mason thatcher boatwright ropemaker
beekeeper dairymaid cheesemaker gardener forester hunter trader pedlar clerk scribe mapmaker
bookbinder printer tailor cobbler dyer spinner clockmaker lockmaker joiner wheelwright saddler
harper fiddler singer storyteller herbalist midwife physician apothecary sailor lamplighter
watchman gatekeeper carter drover stonecutter surveyor
""")

KIN = _words("grandmother grandfather mother father aunt uncle cousin sister brother niece nephew neighbour friend apprentice")

MATERIALS = _words("""
clay willow reed wool flax linen hemp leather oak ash pine copper iron brass tin silver glass wax
tallow honey beeswax straw rush birch hazel chalk lime slate sandstone granite flint bone horn
salt barley rye oats milk cream
""")

TOOLS = _words("""
knife awl chisel mallet hammer saw plane rasp file gouge drill auger wedge needle shuttle spindle
loom wheel kiln anvil tongs bellows ladle sieve press mould churn trowel float level square
compass rule gauge brush scraper pliers clamp vice whetstone hook
""")

ABSTRACT = _words("""
tradition custom festival rumour story legend song proverb recipe pattern technique habit rule
quarrel friendship rivalry bargain promise debt fortune luck trade skill patience courage pride
memory history reputation harvest season drought flood storm journey errand lesson secret
""")

ADVERBS = _words("""
slowly quickly carefully gently quietly loudly patiently proudly happily sadly suddenly gradually
easily barely nearly often rarely seldom always usually sometimes briefly eagerly warily boldly
neatly firmly softly steadily cheerfully reluctantly generously wisely openly calmly politely
""")

WEATHER = _phrases("""
a cold wind from the north, heavy rain, a thick fog, a light frost, a warm breeze, a sudden storm,
clear skies, low grey cloud, drizzle, a hard frost, a summer haze, a spring shower, falling snow,
a bright autumn sun, sleet
""")

FEELINGS = _words("glad worried tired proud surprised curious relieved anxious hopeful puzzled content restless homesick")

MONTHS = _words("January February March April May June July August September October November December")
WEEKDAYS = _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
SEASONS = _words("spring summer autumn winter")
DIRECTIONS = _words("north south east west")
NUMBER_WORDS = _words("zero one two three four five six seven eight nine ten eleven twelve")

FEMALE_NAMES = _words("""
Ada Agnes Alba Alys Anna Bea Bess Briony Cara Cass Clara Cora Della Dora Edda Edith Elin Ella
Elsa Ember Enid Esme Etta Eva Faye Fern Freya Greta Gwen Hana Hazel Helga Hester Ida Ilse Ina
Iris Isla Ivy Jenna Jess Juna Kara Kit Lena Lila Linnea Liv Lotte Lucy Mabel Maeve Mara Marta
Maud Mina Mira Moll Nell Nia Nora Odile Olga Orla Pella Petra Pia Quill Rhea Rosa Rue Ruth Saba
Sadie Selma Senna Signe Sita Tamsin Tess Thea Tilda Una Ursa Vera Vida Wren Yara Zelda Zia
""")
MALE_NAMES = _words("""
Abel Aldo Alfie Amos Anders Arlo Arne Barnaby Basil Bram Cai Cedric Colm Conrad Dai Dax Edgar
Edmund Elias Emil Ennis Ewan Felix Finn Fred Gideon Gil Hal Hamish Hugo Ivo Jago Jem Joss Jory
Kai Kester Lars Leif Lev Linus Lorcan Luca Magnus Malo Milo Moss Nils Noll Oban Olaf Orin Oskar
Otto Pell Piran Quentin Ralf Rafe Rhys Rolf Ronan Rune Sami Seb Silas Soren Tam Teo Tobin Torin
Ulf Vance Viggo Wade Walt Wendel Wilf Yuri Zeb
""")

_SURNAME_HEADS = _words("Ash Birch Black Bright Brook Cold Cross Dale Fair Fern Flint Green Hart Hazel Hill Holt Kettle "
                        "Lark Long Marsh Mill Moss Oak Pike Reed Rook Salt Stone Swift Thorn Wild Wood Wren Yew")
_SURNAME_TAILS = _words("wood ford well man wright smith field ley by stone more ridge dale worth hurst combe")

_TOWN_HEADS = _words("Ash Bram Cold Dun Elm Fen Glen Hart Iron Kettle Lark Marrow North Oak Pell Quarry Raven Salt "
                     "Thorn Umber Wick Yarrow Amber Brindle Corrow Dapple Ember Fallow Gorse Heron Juniper Kestrel "
                     "Lantern Mire Nettle Orchard Pebble Rush Sable Tallow Willow")
_TOWN_TAILS = _words("ford by mere wick holm stead ton bridge moor haven dale field cross well combe thorpe hythe ley")

RIVER_NAMES = _words("Lune Wend Tarrow Ambrel Sille Corran Dove Eske Fenna Gale Hollin Isset Kell Lorne Maddow "
                     "Nerrin Ouse Perrow Quill Rennet Sorrow Teal Ulla Varrow")

REGIONS = ("the Northern Fells", "the Saltmarsh", "the Amber Downs", "the Heron Vale", "the Kettle Hills",
           "the Western Reaches", "the Lantern Coast", "the Greywood")

# (craft, worker, material, products, tools, actions): how-to steps and forum advice combine these.
CRAFTS = (
    ("pottery", "potter", "clay", ("bowls", "jugs", "tiles", "cups"), ("wheel", "kiln", "wire"),
     ("wedge", "knead", "shape", "trim", "glaze", "fire")),
    ("basket weaving", "basket maker", "willow", ("baskets", "creels", "hampers", "trays"), ("bodkin", "knife", "bucket"),
     ("soak", "sort", "split", "weave", "pack", "trim")),
    ("cheese making", "cheesemaker", "milk", ("cheeses", "curds", "rounds"), ("vat", "press", "ladle"),
     ("warm", "stir", "cut", "drain", "press", "salt")),
    ("rope making", "ropemaker", "hemp", ("ropes", "cords", "nets"), ("hook", "spinner", "rope walk"),
     ("comb", "twist", "lay", "stretch", "coil", "tar")),
    ("glassblowing", "glassblower", "glass", ("bottles", "beads", "lamps", "windows"), ("blowpipe", "furnace", "tongs"),
     ("gather", "heat", "blow", "shape", "cool", "polish")),
    ("boat building", "boatwright", "oak", ("boats", "skiffs", "punts", "oars"), ("adze", "saw", "clamp"),
     ("season", "saw", "steam", "bend", "fit", "caulk")),
    ("beekeeping", "beekeeper", "beeswax", ("jars of honey", "candles", "combs"), ("smoker", "veil", "hive tool"),
     ("check", "smoke", "lift", "scrape", "strain", "bottle")),
    ("candle making", "chandler", "tallow", ("candles", "tapers", "lamps"), ("mould", "pot", "wick frame"),
     ("melt", "strain", "pour", "dip", "cool", "trim")),
    ("weaving", "weaver", "wool", ("blankets", "shawls", "rugs", "cloth"), ("loom", "shuttle", "reed"),
     ("card", "spin", "warp", "weave", "full", "dye")),
    ("bread baking", "baker", "rye", ("loaves", "rolls", "buns"), ("oven", "peel", "trough"),
     ("mix", "knead", "prove", "shape", "score", "bake")),
    ("smithing", "smith", "iron", ("nails", "hinges", "horseshoes", "blades"), ("anvil", "hammer", "bellows"),
     ("heat", "hammer", "fold", "quench", "temper", "file")),
    ("leatherwork", "saddler", "leather", ("saddles", "belts", "satchels", "boots"), ("awl", "needle", "edger"),
     ("soak", "cut", "punch", "stitch", "burnish", "oil")),
    ("dyeing", "dyer", "linen", ("cloth", "yarn", "ribbons"), ("vat", "pole", "kettle"),
     ("wash", "mordant", "simmer", "dip", "rinse", "dry")),
    ("thatching", "thatcher", "reed", ("roofs", "ridges", "bundles"), ("legget", "spar hook", "ladder"),
     ("sort", "bundle", "lay", "dress", "pin", "trim")),
    ("cider making", "cider maker", "apples", ("casks of cider", "bottles of cider", "jugs of perry"), ("press", "mill", "barrel"),
     ("pick", "wash", "crush", "press", "ferment", "rack")),
    ("clockmaking", "clockmaker", "brass", ("clocks", "watches", "gears"), ("lathe", "file", "loupe"),
     ("cut", "file", "fit", "oil", "regulate", "polish")),
    ("bookbinding", "bookbinder", "paper", ("books", "ledgers", "albums"), ("press", "bone folder", "needle"),
     ("fold", "sew", "glue", "press", "cover", "trim")),
    ("salt making", "salter", "brine", ("sacks of salt", "salt blocks"), ("pan", "rake", "furnace"),
     ("draw", "settle", "boil", "rake", "dry", "pack")),
    ("net mending", "net maker", "twine", ("nets", "traps", "floats"), ("needle", "gauge", "knife"),
     ("measure", "knot", "mend", "stretch", "dry", "tar")),
    ("stone carving", "mason", "sandstone", ("lintels", "headstones", "troughs"), ("chisel", "mallet", "rasp"),
     ("mark", "split", "dress", "carve", "rub", "set")),
    ("barrel making", "cooper", "oak", ("barrels", "tubs", "buckets"), ("adze", "croze", "hoop driver"),
     ("split", "shave", "raise", "heat", "hoop", "seal")),
    ("lacemaking", "lacemaker", "linen thread", ("collars", "cuffs", "edgings"), ("pillow", "bobbins", "pins"),
     ("wind", "pin", "twist", "cross", "wash", "press")),
)
CRAFT_NAMES = tuple(c[0] for c in CRAFTS)

_IRREGULAR_PLURALS = {
    "knife": "knives", "loaf": "loaves", "leaf": "leaves", "wolf": "wolves", "shelf": "shelves", "calf": "calves",
    "sheep": "sheep", "fish": "fish", "deer": "deer", "mouse": "mice", "goose": "geese", "child": "children",
    "man": "men", "woman": "women", "ox": "oxen", "foot": "feet", "tooth": "teeth", "potato": "potatoes",
    "tomato": "tomatoes", "scarf": "scarves", "half": "halves", "ferryman": "ferrymen", "watchman": "watchmen",
    "trout": "trout", "salmon": "salmon", "pike": "pike", "carp": "carp", "perch": "perch", "bream": "bream",
    "dairymaid": "dairymaids", "hoof": "hooves", "series": "series", "sheaf": "sheaves",
}


def _plural(word: str) -> str:
    if " " in word:
        head, last = word.rsplit(" ", 1)
        if head.endswith(" of") or " of " in word:  # "jar of honey" -> "jars of honey"
            first, rest = word.split(" ", 1)
            return f"{_plural(first)} {rest}"
        return f"{head} {_plural(last)}"
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _third_person(verb: str) -> str:
    if verb == "have":
        return "has"
    if verb in ("go", "do"):
        return verb + "es"
    return verb + "s" if verb in _IRREGULAR_PLURALS else _plural(verb)


# Transitive verbs taking a thing as object; irregular pasts spelled out, the rest follow the rule.
_VERB_PASTS = {
    "bring": "brought", "make": "made", "sell": "sold", "buy": "bought", "find": "found", "leave": "left", "keep": "kept",
    "hold": "held", "sweep": "swept", "spin": "spun", "dig": "dug", "grind": "ground", "hang": "hung", "lend": "lent",
    "lose": "lost", "take": "took", "give": "gave", "throw": "threw", "build": "built", "weave": "wove", "stir": "stirred",
    "knit": "knitted", "mend": "mended", "sew": "sewed", "carry": "carried", "bury": "buried", "tie": "tied", "dye": "dyed",
    "steal": "stole", "shake": "shook", "fetch": "fetched", "wrap": "wrapped", "trim": "trimmed", "drop": "dropped",
    "shut": "shut", "set": "set", "cut": "cut", "split": "split", "spread": "spread", "sweep up": "swept up",
    "draw": "drew", "drive": "drove", "ride": "rode", "sing": "sang", "tear": "tore", "wear": "wore", "forget": "forgot",
}
TRANSITIVE_VERBS = _words("""
carry mend paint polish gather sell buy trade carve weave bake load unload stack sort wash repair
build fetch deliver inspect measure weigh count pack wrap tie fold hang store lend share clean
sharpen tend plant harvest dry salt smoke grind boil roast stir pour fill empty seal label display
admire praise describe sketch collect bring make find keep hold sweep spin dig knit sew drop trim
mark check test taste smell guard hide open close lift drag push pull chase follow greet visit
""")


def _past(verb: str) -> str:
    if verb in _VERB_PASTS:
        return _VERB_PASTS[verb]
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + "ed"


PLURAL = {w: _plural(w) for w in OBJECTS + ANIMALS + ROLES + PLANTS + FRUITS + VEGETABLES + LANDSCAPE + TOOLS + KIN}
# Adjectives a near-copy may swap: not the ones that double as nouns or verbs ("the light began to
# fade", "warm the milk", "the village green"), so a swap never breaks the sentence.
SWAPPABLE_ADJECTIVES = frozenset(ADJECTIVES) - frozenset(COLOURS) - frozenset(_words("""
light square plain stone iron copper brass linen leather woollen open still common hollow fresh fine dry low cool warm
even dull sharp clear round rich poor flat last upper lower inner outer central early late hard soft smooth tart mild
stern pale dark bright wild quiet calm patched mended sticky precious rare"""))


# --------------------------------------------------------------------------------------------
# The world: fixed, so its facts are the same in every corpus and every source
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Town:
    name: str
    region: str
    river: str
    craft: tuple
    founded: int
    founder: str
    population: int
    market_day: str
    festival: str
    festival_month: str
    dish: str
    landmark: str
    neighbour: str
    distance: int


@dataclass(frozen=True)
class Person:
    name: str
    gender: str
    town: str
    trade: str
    born: int
    work: str


@dataclass(frozen=True)
class World:
    towns: tuple[Town, ...]
    people: tuple[Person, ...]
    rivers: tuple[str, ...]

    def town(self, name: str) -> Town:
        return next(t for t in self.towns if t.name == name)


def _full_name(rng: random.Random, first: str) -> str:
    return f"{first} {rng.choice(_SURNAME_HEADS)}{rng.choice(_SURNAME_TAILS)}"


@lru_cache(maxsize=1)
def world() -> World:
    """The invented world, built once from WORLD_SEED (independent of any corpus seed)."""
    rng = random.Random(WORLD_SEED)
    names: list[str] = []
    while len(names) < N_TOWNS:
        name = rng.choice(_TOWN_HEADS) + rng.choice(_TOWN_TAILS)
        if name not in names:
            names.append(name)
    founders = [_full_name(rng, rng.choice(FEMALE_NAMES + MALE_NAMES)) for _ in names]
    towns = []
    for i, name in enumerate(names):
        festival = f"{rng.choice(('Lantern', 'Harvest', 'Ribbon', 'Bell', 'Boat', 'Bonfire', 'Cheese', 'Apple', 'Kite', 'Herring'))} " \
                   f"{rng.choice(('Fair', 'Festival', 'Feast', 'Parade', 'Market'))}"
        towns.append(Town(
            name=name, region=REGIONS[i % len(REGIONS)], river=RIVER_NAMES[rng.randrange(len(RIVER_NAMES))],
            craft=CRAFTS[i % len(CRAFTS)], founded=rng.randint(820, 1690), founder=founders[i],
            population=rng.choice((rng.randint(300, 2500), rng.randint(2500, 12000), rng.randint(12000, 48000))),
            market_day=rng.choice(WEEKDAYS[:6]), festival=festival, festival_month=rng.choice(MONTHS),
            dish=rng.choice(FOODS), landmark=rng.choice(PLACES), neighbour="", distance=0,
        ))
    # Each town's neighbour is another town of the same region (regions are assigned i % 8).
    linked = []
    for i, town in enumerate(towns):
        j = (i + len(REGIONS)) % len(towns)
        linked.append(replace(town, neighbour=towns[j].name, distance=3 + (i * 7 + j * 3) % 38))
    people = []
    for _ in range(N_PEOPLE):
        gender = rng.choice("fm")
        first = rng.choice(FEMALE_NAMES if gender == "f" else MALE_NAMES)
        town = rng.choice(linked)
        trade = rng.choice((town.craft[1], rng.choice(ROLES), rng.choice(ROLES)))
        work = rng.choice((
            f"a map of the {town.river} valley", f"the bridge at {town.name}", f"a book of {town.craft[0]} patterns",
            f"the great {rng.choice(OBJECTS)} in the {town.landmark} of {town.name}", f"a song about the {town.festival}",
            f"a history of {town.region[4:]}", f"the first {rng.choice(PLACES)} in {town.name}",
            f"a method of drying {rng.choice(MATERIALS)}", f"a famous recipe for {town.dish}",
        ))
        born = rng.randint(max(1620, town.founded + 20), 1940)
        people.append(Person(_full_name(rng, first), gender, town.name, trade, born, work))
    return World(tuple(linked), tuple(people), tuple(sorted({t.river for t in linked})))


def heldout_towns() -> frozenset[str]:
    """Towns the SFT chats never mention: what the world-knowledge suite asks about."""
    return frozenset(t.name for i, t in enumerate(world().towns) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1)


def heldout_people() -> frozenset[str]:
    return frozenset(p.name for i, p in enumerate(world().people) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1)


# Single-digit sums and products (unordered pairs), half of them held out of the SFT chats: the
# arithmetic corpus drills all of them, the chats teach the question format on the other half.
_SMALL = range(2, 10)
_PAIRS = sorted({(op, min(a, b), max(a, b)) for op in "+*" for a in _SMALL for b in _SMALL})
random.Random(WORLD_SEED).shuffle(_PAIRS)
HELDOUT_SUMS = frozenset(_PAIRS[: len(_PAIRS) // 2])
SFT_SUMS = tuple(sorted(set(_PAIRS) - HELDOUT_SUMS))


def _equation_re(op: str, a: int, b: int) -> re.Pattern:
    sign = re.escape(op)
    return re.compile(rf"(?<![\d.])(?:{a} {sign} {b}|{b} {sign} {a})(?![\d.])")


_HELDOUT_EQUATIONS = tuple(_equation_re(*pair) for pair in sorted(HELDOUT_SUMS))


def leaks_heldout(text: str) -> bool:
    """Whether `text` names a held-out town or person, or states a held-out sum or product."""
    return (any(name in text for name in heldout_towns() | heldout_people())
            or any(pattern.search(text) for pattern in _HELDOUT_EQUATIONS))


# --------------------------------------------------------------------------------------------
# Template filling
# --------------------------------------------------------------------------------------------

class _G:
    """A record's random stream plus the slot vocabulary templates draw from."""

    def __init__(self, rng: random.Random):
        self.r = rng
        self.w = world()

    def pick(self, seq):
        return seq[int(self.r.random() * len(seq))]

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def num(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi)

    def sample(self, seq, k: int) -> list:
        return self.r.sample(list(seq), k)

    def first_name(self) -> str:
        return self.pick(FEMALE_NAMES) if self.chance(0.5) else self.pick(MALE_NAMES)

    def full_name(self) -> str:
        return _full_name(self.r, self.first_name())


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


_SLOTS: dict[str, Callable[[_G], str]] = {
    "adj": lambda g: g.pick(ADJECTIVES),
    "padj": lambda g: g.pick(PERSON_ADJECTIVES),
    "tadj": lambda g: g.pick(THING_ADJECTIVES),
    "ladj": lambda g: g.pick(PLACE_ADJECTIVES),
    "fadj": lambda g: g.pick(FOOD_ADJECTIVES),
    "sadj": lambda g: g.pick(STATE_ADJECTIVES),
    "wadj": lambda g: g.pick(WEATHER_ADJECTIVES),
    "livestock": lambda g: g.pick(LIVESTOCK),
    "colour": lambda g: g.pick(COLOURS),
    "noun": lambda g: g.pick(OBJECTS),
    "nouns": lambda g: PLURAL[g.pick(OBJECTS)],
    "place": lambda g: g.pick(PLACES),
    "land": lambda g: g.pick(LANDSCAPE),
    "lands": lambda g: PLURAL[g.pick(LANDSCAPE)],
    "animal": lambda g: g.pick(ANIMALS),
    "animals": lambda g: PLURAL[g.pick(ANIMALS)],
    "bird": lambda g: g.pick(BIRDS),
    "fish": lambda g: g.pick(FISH),
    "plant": lambda g: g.pick(PLANTS),
    "tree": lambda g: g.pick(TREES),
    "fruits": lambda g: PLURAL[g.pick(FRUITS)],
    "veg": lambda g: PLURAL[g.pick(VEGETABLES)],
    "food": lambda g: g.pick(FOODS),
    "role": lambda g: g.pick(ROLES),
    "roles": lambda g: PLURAL[g.pick(ROLES)],
    "kin": lambda g: g.pick(KIN),
    "material": lambda g: g.pick(MATERIALS),
    "tool": lambda g: g.pick(TOOLS),
    "abstract": lambda g: g.pick(ABSTRACT),
    "hasty": lambda g: g.pick(("quickly", "roughly", "hastily", "hard", "early", "long", "often")),
    "wet": lambda g: g.pick(("marsh", "pool", "mere", "reed bed", "estuary", "fen", "bay", "backwater")),
    "store": lambda g: g.pick(("dry", "cool", "dark", "airy", "shaded", "clean", "quiet")),
    "rough": lambda g: g.pick(("lopsided", "uneven", "rough", "crooked", "clumsy", "plain", "patchy")),
    "dusk": lambda g: g.pick(("grey", "golden", "pale", "evening", "last", "red", "thin")),
    "tale": lambda g: g.pick(("story", "legend", "song", "rhyme", "ballad", "riddle")),
    "adv": lambda g: g.pick(ADVERBS),
    "weather": lambda g: g.pick(WEATHER),
    "feeling": lambda g: g.pick(FEELINGS),
    "month": lambda g: g.pick(MONTHS),
    "weekday": lambda g: g.pick(WEEKDAYS),
    "season": lambda g: g.pick(SEASONS),
    "dir": lambda g: g.pick(DIRECTIONS),
    "vpast": lambda g: _past(g.pick(TRANSITIVE_VERBS)),
    "verb": lambda g: g.pick(TRANSITIVE_VERBS),
    "verbs": lambda g: _third_person(g.pick(TRANSITIVE_VERBS)),
    "name": lambda g: g.first_name(),
    "fullname": lambda g: g.full_name(),
    "town": lambda g: g.pick(g.w.towns).name,
    "river": lambda g: g.pick(g.w.rivers),
    "region": lambda g: g.pick(REGIONS),
    "craft": lambda g: g.pick(CRAFT_NAMES),
    "num": lambda g: str(g.num(2, 60)),
    "small": lambda g: g.pick(NUMBER_WORDS[2:10]),
    "year": lambda g: str(g.num(900, 1930)),
    "percent": lambda g: str(g.num(5, 95)),
}

_SLOT_RE = re.compile(r"\{(a_)?([A-Za-z]+?)(\d?)\}")


def _fill(g: _G, template: str, fixed: dict | None = None, capitalize: bool = True) -> str:
    """Replace {slot} with a fresh draw, {slot2} with another, {a_slot} with an article.

    `fixed` pins slots to a document's subject (a string) or to a document-specific draw (a callable).
    """
    fixed = fixed or {}

    def replace(m: re.Match) -> str:
        article, kind, index = m.groups()
        key = kind + index
        value = fixed[key] if key in fixed else _SLOTS[kind]
        if callable(value):
            value = value(g)
        return _article(value) if article else value

    text = _SLOT_RE.sub(replace, template)
    return text[0].upper() + text[1:] if capitalize else text


def _sentences(g: _G, templates: tuple[str, ...], k: int, fixed: dict[str, str]) -> list[str]:
    return [_fill(g, t, fixed) for t in g.sample(templates, min(k, len(templates)))]


# --------------------------------------------------------------------------------------------
# Prose
# --------------------------------------------------------------------------------------------

_TOWN_FACTS = {
    "river": ("{T} lies on the River {R}.", "{T} stands on the banks of the River {R}.",
              "The River {R} runs through the middle of {T}.", "{T} grew up around an old ford on the {R}.",
              "Most of {T} is built along the {dir} bank of the River {R}."),
    "founded": ("{T} was founded in {Y} by {F}.", "According to the town records, {F} founded {T} in {Y}.",
                "The first houses of {T} were built in {Y}, when {F} settled by the {R}.",
                "{F} is remembered as the founder of {T}, which dates from {Y}."),
    "craft": ("{T} is known for its {C}.", "For centuries the {Ws} of {T} have made fine {P}.",
              "The town is famous across {REG} for {C}, and its {P} are sold as far away as {town}.",
              "Ask anyone in {REG} about {T} and they will mention its {C}."),
    "population": ("About {POP} people live in {T} today.", "{T} has a population of roughly {POP}.",
                   "The last count gave {T} some {POP} inhabitants."),
    "market": ("The market in {T} is held every {D}.", "On {D}s the {place} of {T} fills with market stalls.",
               "Traders come to {T} every {D} for the weekly market."),
    "festival": ("Each {FM}, {T} holds the {FEST}.", "The {FEST} takes place in {T} every {FM}.",
                 "In {FM} the streets of {T} are crowded for the {FEST}."),
    "region": ("{T} is a town in {REG}.", "{T} is one of the larger towns of {REG}.", "{T} sits in the {ladj} country of {REG}."),
    "neighbour": ("{T} is {DIST} miles from {N2}.", "The road from {T} to {N2} is {DIST} miles long.",
                  "{N2}, the nearest town, lies {DIST} miles away."),
    "dish": ("The local dish is {DISH}.", "Visitors to {T} are told to try the {DISH}.", "No feast in {T} is complete without {DISH}."),
    "landmark": ("The best known building in {T} is its {LM}.", "The {LM} of {T} is older than most of the town."),
}

_TOWN_FILLER = (
    "The {ladj} streets of {T} wind down towards the {place}.",
    "Many {roles} in {T} still {verb} {nouns} by hand, as their {kin}s did.",
    "Visitors often remark on the {tadj} {noun} that hangs above the door of the {place}.",
    "In {year}, {weather} damaged the {place} and {num} houses had to be rebuilt.",
    "The {land} to the {dir} of {T} is good country for {animals}.",
    "Behind the {place} there is {a_ladj} {land} where children gather {fruits} in {season}.",
    "Old maps show {a_tadj} {noun} painted in {colour} above the gate of {T}.",
    "Local {roles} say that the {animals} of the {land} come down to the {R} in {season}.",
    "The houses around the {place} are {ladj} and {ladj2}, with roofs of {material}.",
    "During the {season} the {place} is used for {abstract}s and weddings.",
    "{a_ladj} path leads from the {place} up to the {land}, where {tree} trees grow.",
    "Most families keep {livestock} and grow {veg} in small gardens behind their houses.",
    "The town council meets in the {place} on the first {weekday} of each month.",
    "In the {season} of {year}, {fullname} opened {a_role}'s shop near the {place}.",
    "There is a saying in {T} that {a_tadj} {noun} brings luck to a new house.",
    "The {place} was rebuilt in {year} after a fire that began in {a_role}'s workshop.",
    "Fishing for {fish} in the {R} is allowed from {month} to {month2}.",
    "Schoolchildren in {T} learn the {tale} of the {padj} {animal} before they can read.",
    "Some {num} {roles} work in the town, most of them near the {place}.",
    "Travellers from {town} often stop in {T} to buy {nouns} and {food}.",
    "On summer evenings the {roles} of {T} sit outside the {place} and talk about the {abstract} of {year}.",
    "The oldest house in {T} belonged to {a_padj} {role} called {fullname}.",
    "{a_tadj} {noun} from {T} was once given as a wedding gift to {a_role} in {town}.",
    "When the {R} freezes, which happens perhaps {small} times in a lifetime, people skate from {T} to {town}.",
    "Rents in {T} rose by {percent} percent after the new {place} opened in {year}.",
    "The school in {T} has {num} pupils and {a_padj} teacher who has been there since {year}.",
    "In {month} the {ladj} lanes around {T} smell of {plant} and wood smoke.",
    "Every house in the old part of {T} has {a_colour} door, by a rule nobody remembers making.",
)

_CRAFT_TEMPLATES = (
    "{CRAFT} has been practised in {REG} since at least {year}.",
    "{a_W} needs {a_tadj} {tool}, a steady hand and plenty of {M}.",
    "The best {M} is said to come from the {lands} near {town}.",
    "An apprentice {W} spends {small} years learning to {A1} and {A2} before making {P} alone.",
    "Most {Ws} sell their {P} at the weekly markets, where a good piece fetches {num} coins.",
    "In the old days {a_W} would {A1} the {M} {adv} by the light of a single candle.",
    "{fullname}, {a_W} from {town}, wrote the first guide to {CRAFT} in {year}.",
    "The trade suffered in {year}, when {weather} ruined a whole season of {M}.",
    "Children in {town} often learn {CRAFT} from {a_kin} before they are {small} years old.",
    "Some {Ws} mark each of their {P} with {a_colour} thread or a small carved {animal}.",
    "A well-made {PS} can last {num} years if it is kept dry and out of the sun.",
    "Guild rules once said that no {W} could {A2} {M} on {a_weekday}.",
    "Collectors in {town} pay high prices for old {P} with {tadj} patterns.",
    "The tools of the trade have hardly changed: the {tool}, the {T1} and the {T2}.",
    "A good {W} can {A1} enough {M} for {num} {P} in a single {season} day.",
    "The {Ws} of {REG} once argued for {small} years about the right way to {A2} {M}.",
    "Prices rose in {year}, and a single load of {M} cost {num} coins at the {town} market.",
    "Young {Ws} are told to {A1} slowly at first and only later to work {adv}.",
    "The guild hall of the {Ws} in {town} still keeps {a_tadj} {noun} from {year}.",
    "Some families have passed the same {tool} down for {small} generations.",
)

_RIVER_TEMPLATES = (
    "The River {R} rises among the {lands} of {region} and flows {dir} for {DIST} miles.",
    "Along its course the {R} passes {TOWNS}.",
    "The {R} is shallow in {season}, and in dry years it can be crossed on foot near {town}.",
    "Its waters are home to {fish} and {fish2}, and {BIRDS} nest on its banks.",
    "{a_tadj} stone bridge crosses the {R} at {T0}, built in {year}.",
    "Floods on the {R} in {year} reached the doors of the {place} in {T0}.",
    "Ferrymen once carried {nouns} and {animals} across the {R} for {small} coins a load.",
    "Willows and {tree} trees line the banks of the {R} below {T0}.",
    "Fishers on the {R} say the {fish} bite best on {wadj} mornings in {month}.",
    "The old towpath beside the {R} is now {a_ladj} walk popular with {roles}.",
    "Mills once stood every {small} miles along the {R}, grinding {material} and sawing {tree} wood.",
    "In {year} the {R} changed its course after {weather} and flooded the {lands} near {T0}.",
    "Children from {T0} swim in the {R} in {month}, when the water is warm and slow.",
    "Boats carrying {nouns} and {veg} travelled down the {R} to the sea until about {year}.",
    "Below {T0} the {R} widens into {a_ladj} {wet} full of {plant} and {bird}s.",
)

_BIO_OPENINGS = ("{P} was born in {B} in {T} and worked as {a_TRADE}.", "{P}, {a_TRADE} from {T}, is best remembered for {WORK}.")
_BIO_TEMPLATES = (
    "As a child, {P} spent long days by the River {R}, watching the {roles} at work.",
    "{Pr} learned the trade from {a_kin} who kept a shop near the {place}.",
    "In {year2}, {pr} travelled to {town} to study with a famous {role}.",
    "{Pos} {tadj} {noun} can still be seen in the {place} of {T}.",
    "Friends described {P} as {padj} and {padj2}, but always {padj3} with strangers.",
    "{Pr} married {fullname} in {year2} and they had {small} children.",
    "Late in life {pr} returned to {T}, where {pr} taught {CRAFT} to {num} apprentices.",
    "{a_tadj} portrait of {P} hangs in the {place} of {town}.",
    "Even today the {roles} of {T} tell stories about {P}.",
    "In {year2} {pr} wrote a letter to the council of {town} about the state of the {place}.",
    "{Pr} kept {livestock} and {a_tadj} {noun} that {pr} would lend to anyone who asked.",
    "Many of {pos} {tadj} {nouns} were sold after {pos} death and are now in {town}.",
    "People in {T} still use the saying \"as {padj} as {P}\".",
)

_HOWTO_INTROS = (
    "This guide explains how to {A} {M} the way the {Ws} of {town} do it.",
    "If you want to make your own {P}, start with good {M} and {a_tadj} {tool}.",
    "Making {P} at home takes patience, but the method is simple once you have tried it {small} times.",
    "Here is how {Ws} in {REG} {A} {M} for {P}, step by step.",
)
_STEP_LEADS = ("First", "Next", "Then", "After that", "Now", "When that is done", "Once it is ready")
_STEP_TAILS = (
    "for about {num} minutes", "until it feels {sadj}", "with {a_tadj} {tool}", "on a clean {tadj} board",
    "in a bucket of {wadj} water", "near a warm hearth", "while it is still {sadj}", "in small batches of {small}",
    "using {num} grams of {material}", "so that it stays {sadj}", "and set it aside for {small} hours",
    "before the {season} damp gets in", "without pressing too hard", "the way your {kin} showed you",
)
_HOWTO_TIPS = (
    "A common mistake is to {A} the {M} too {hasty}; take your time.",
    "Keep your {tool} sharp and clean, or the {M} will tear.",
    "If the {M} cracks, wet it again and wait {small} minutes before you {A}.",
    "Experienced {Ws} in {town} add a little {material} at this stage.",
    "Store finished {P} somewhere {store} and away from {animals}.",
    "Your first {P} will look {rough}, but the tenth will look much better.",
    "Do not work in {weather}; the {M} takes up the damp and will not behave.",
    "Many beginners buy {a_tadj} {tool} from the market in {town}, and it serves them for years.",
    "If you have {a_kin} who knows the craft, ask them to watch you work for {small} minutes.",
)

_STORY_OPENINGS = (
    "One {wadj} {season} morning, {H} left {T} with {a_noun} and a bag of {food}.",
    "{H} had lived in {T} all {pos} life, but in {month} of {year} {pr} decided to visit {T2}.",
    "When {weather} came down over {T}, {H} was still working in the {place}.",
    "Nobody in {T} remembered who had left {a_tadj} {noun} outside the {place}, but {H} decided to find out.",
)
_STORY_MIDDLE = (
    "{Pr} walked along the River {R} until the {dusk} light began to fade.",
    "On the road {pr} met {a_role} named {N2}, who was carrying {num} {nouns}.",
    "\"Where are you going with that {noun}?\" asked {N2}.",
    "\"To {T2},\" said {H}, \"to sell it at the {weekday} market.\"",
    "At the {place} in {T2}, {a_padj} {role} offered {small} coins for the {noun}.",
    "{H} felt {feeling}, because {pos} {kin} had made that {noun} long ago.",
    "They stopped to rest under {a_tree} tree and shared some {food}.",
    "{a_animal} watched them from the {land} and then ran off towards the {R}.",
    "{N2} told {a_padj} story about the {abstract} of the {place} in {T}.",
    "By evening {weather} had set in, so they found a room at an inn near the {place}.",
    "The innkeeper, {a_padj} {role}, remembered {pos} {kin} from the old days.",
    "In the morning {H} {vpast} the {noun2} and set off again.",
    "On the second day they crossed {a_ladj} {land} where {animals} grazed among the {plant}.",
    "{N2} had once worked as {a_role} in {town} and knew every path in {region}.",
    "At noon they ate {food} and watched {a_bird} circling over the {R}.",
    "{a_padj} {role} at the gate asked them for {small} coins before letting them pass.",
    "{Pr} counted the coins twice: there were {num} of them, more than {pr} had hoped.",
)
_STORY_ENDINGS = (
    "{H} returned to {T} before the {FEST} and told everyone what had happened.",
    "In the end {H} kept the {noun}, and it still stands in {pos} house in {T}.",
    "Years later {H} would say that the journey to {T2} was the best thing {pr} ever did.",
    "{H} never sold the {noun}, but {pr} and {N2} stayed friends for the rest of their lives.",
)

_PRONOUNS = {"f": ("she", "her", "her"), "m": ("he", "his", "him")}


def _town_fixed(town: Town) -> dict[str, str]:
    craft, worker, material, products = town.craft[:4]
    return {"T": town.name, "R": town.river, "Y": str(town.founded), "F": town.founder, "C": craft, "W": worker,
            "Ws": _plural(worker), "P": products[0], "M": material, "POP": f"{town.population:,}", "D": town.market_day,
            "FEST": town.festival, "FM": town.festival_month, "REG": town.region, "N2": town.neighbour,
            "DIST": str(town.distance), "DISH": town.dish, "LM": town.landmark}


def _prose_town(g: _G) -> str:
    town = g.pick(g.w.towns)
    fixed = _town_fixed(town)
    facts = [_fill(g, g.pick(v), fixed) for v in g.sample(list(_TOWN_FACTS.values()), g.num(6, 9))]
    filler = _sentences(g, _TOWN_FILLER, g.num(2, 5), fixed)
    first, rest = facts[0], facts[1:] + filler
    g.r.shuffle(rest)
    cut = len(rest) // 2
    return f"{first} {' '.join(rest[:cut])}\n\n{' '.join(rest[cut:])}"


def _prose_craft(g: _G) -> str:
    craft = g.pick(CRAFTS[:len(g.w.towns)])  # town i practises CRAFTS[i % len(CRAFTS)]
    name, worker, material, products, tools, actions = craft
    towns = [t for t in g.w.towns if t.craft[0] == name]
    tools2 = g.sample(TOOLS, 2)
    fixed = {"CRAFT": name, "W": worker, "Ws": _plural(worker), "M": material, "P": products[0],
             "PS": products[0][:-1] if products[0].endswith("s") else products[0], "REG": g.pick(towns).region,
             "A1": actions[0], "A2": g.pick(actions[1:]), "T1": tools2[0], "T2": tools2[1], "tool": g.pick(tools)}
    lead = (f"{name[0].upper()}{name[1:]} is the craft of turning {material} into {', '.join(products[:-1])} and {products[-1]}. "
            f"It is practised above all in {_join([t.name for t in towns])}.")
    body = _sentences(g, _CRAFT_TEMPLATES, g.num(8, 13), fixed)
    return lead + " " + " ".join(body)


def _prose_river(g: _G) -> str:
    river = g.pick(g.w.rivers)
    towns = [t for t in g.w.towns if t.river == river]
    fixed = {"R": river, "TOWNS": _join([t.name for t in towns]), "T0": g.pick(towns).name, "DIST": str(g.num(20, 140)),
             "BIRDS": _plural(g.pick(BIRDS))}
    body = _sentences(g, _RIVER_TEMPLATES, g.num(8, 12), fixed)
    facts = [_fill(g, g.pick(_TOWN_FACTS["river"]), _town_fixed(t)) for t in towns[:3]]
    return " ".join(body[:2] + facts + body[2:])


def _person_fixed(person: Person, town: Town) -> dict:
    """The slots a biography template fills from its subject (and the town they came from)."""
    pr, pos, _ = _PRONOUNS[person.gender]
    return {"P": person.name, "T": town.name, "R": town.river, "TRADE": person.trade, "WORK": person.work,
            "B": str(person.born), "pr": pr, "Pr": pr.capitalize(), "pos": pos, "Pos": pos.capitalize(),
            "year2": lambda g2: str(person.born + g2.num(16, 60)), "CRAFT": town.craft[0]}


def _prose_bio(g: _G) -> str:
    person = g.pick(g.w.people)
    town = g.w.town(person.town)
    fixed = _person_fixed(person, town)
    opening = [_fill(g, t, fixed) for t in _BIO_OPENINGS]
    if g.chance(0.5):
        opening.reverse()
    body = _sentences(g, _BIO_TEMPLATES, g.num(7, 11), fixed)
    extra = _fill(g, g.pick(_TOWN_FACTS[g.pick(("river", "craft", "founded", "market"))]), _town_fixed(town))
    return " ".join(opening + body[:2] + [extra] + body[2:])


def _prose_howto(g: _G) -> str:
    name, worker, material, products, tools, actions = g.pick(CRAFTS)
    fixed = {"A": actions[0], "M": material, "Ws": _plural(worker), "P": g.pick(products), "REG": g.pick(REGIONS)}
    title = g.pick((f"How to make {products[0]}", f"A beginner's guide to {name}", f"Making {g.pick(products)} at home",
                    f"{name.capitalize()} for beginners"))
    steps = []
    chosen = sorted(g.sample(range(len(actions)), g.num(4, 6)))
    for k, index in enumerate(chosen):
        lead = "Finally" if k == len(chosen) - 1 else (_STEP_LEADS[0] if k == 0 else g.pick(_STEP_LEADS[1:]))
        tail = _fill(g, g.pick(_STEP_TAILS), capitalize=False)
        obj = material if g.chance(0.6) else f"the {material}"
        steps.append(f"{lead}, {actions[index]} {obj} {tail}.")
    tips = _sentences(g, _HOWTO_TIPS, g.num(3, 5), fixed)
    return f"{title}\n\n{_fill(g, g.pick(_HOWTO_INTROS), fixed)} {' '.join(steps)}\n\n{' '.join(tips)}"


def _prose_story(g: _G) -> str:
    town, town2 = g.sample(g.w.towns, 2)
    gender = g.pick("fm")
    pr, pos, _ = _PRONOUNS[gender]
    hero = g.pick(FEMALE_NAMES if gender == "f" else MALE_NAMES)
    fixed = {"H": hero, "T": town.name, "T2": town2.name, "R": town.river, "FEST": town.festival, "N2": g.first_name(),
             "noun": g.pick(OBJECTS), "pr": pr, "Pr": pr.capitalize(), "pos": pos}
    middle = [_fill(g, t, fixed) for t in _STORY_MIDDLE if g.chance(0.7)]
    return " ".join([_fill(g, g.pick(_STORY_OPENINGS), fixed)] + middle + [_fill(g, g.pick(_STORY_ENDINGS), fixed)])


# A questions-and-answers page's layouts: the question's lead and the answer's. The last two are chat
# logs as web text holds them (the chat template without its special tokens), so that the model meets
# questions answered after "assistant" in its pretraining text, held-out facts included.
FAQ_LAYOUTS = tuple((q, a) for q in ("Q: ", "Question: ", "") for a in ("A: ", "Answer: ", "")) + (
    ("User: ", "Assistant: "), ("user\n", "assistant\n"))


def _prose_faq(g: _G) -> str:
    """A town's (or a person's) questions-and-answers page: each answer right after its question, the
    pattern a model must learn to answer from a question (README, "A demo that learns"). People have
    pages too: stated in prose only, the home towns of held-out people were answered by no model."""
    if g.chance(0.25):
        return _person_faq(g)
    town = g.pick(g.w.towns)
    pairs = {q: a for q, a in (_town_qa(g, town) for _ in range(g.num(4, 8)))}
    return _faq_page(g, pairs, (f"{town.name}: questions and answers", f"Frequently asked questions about {town.name}",
                                f"Visiting {town.name}? Read this first", f"{town.name} in {len(pairs)} questions"),
                     (f"Answers to the questions that visitors to {town.name} ask most often.",
                      f"The questions below come from the letters that the people of {town.name} receive.",
                      f"Everything to know before a visit to {town.name} and the {town.river}, in short answers."))


def _person_faq(g: _G) -> str:
    person = g.pick(g.w.people)
    pairs = {q: a for q, a in (_person_qa(g, person) for _ in range(g.num(2, 4)))}
    return _faq_page(g, pairs, (f"{person.name}: questions and answers", f"Who was {person.name}?",
                                f"{person.name} of {person.town}", f"Local history: {person.name}"),
                     (f"What the town records of {person.town} say about {person.name}.",
                      f"Questions that readers have sent us about {person.name}, with short answers.",
                      f"From the local history society's notes on the people of {g.w.town(person.town).region[4:]}."))


def _faq_page(g: _G, pairs: dict[str, str], titles: tuple[str, ...], intros: tuple[str, ...]) -> str:
    """A title and an intro drawn from the subject's, then the questions in one layout."""
    title, lead, intro = g.pick(titles), g.pick(FAQ_LAYOUTS), g.pick(intros)
    return title + "\n\n" + intro + "\n\n" + "\n\n".join(f"{lead[0]}{q}\n{lead[1]}{a}" for q, a in pairs.items())


def _prose_almanac(g: _G) -> str:
    """A reference entry: every fact about one town (or person) and nothing else, each sentence
    naming its subject. Without this dense form the demo's 1M-parameter model stayed at chance on
    the facts after 800 steps; with it, 14 of 34 held-out questions were answered in its own
    Q&A format (README, "A demo that learns")."""
    if g.chance(0.25):
        person = g.pick(g.w.people)
        fixed = _person_fixed(person, g.w.town(person.town))
        title = person.name
        facts = [long for _, long, _ in _person_options(person, person)] + _sentences(g, _BIO_TEMPLATES, 2, fixed)
        facts.append(f"{person.name} is one of the people of {person.town} whose names appear in the town records.")
    else:
        town = g.pick(g.w.towns)
        title = g.pick((town.name, f"{town.name}, {town.region[4:]}", f"Gazetteer: {town.name}"))
        facts = g.sample([long for _, long, _ in _town_options(town, town)], g.num(7, 10))
    g.r.shuffle(facts)  # a different selection and order each time: not near-duplicates of each other
    return f"{title}\n\n{' '.join(facts)}"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


_PROSE_KINDS = ((_prose_town, 0.22), (_prose_faq, 0.22), (_prose_almanac, 0.22), (_prose_craft, 0.05),
                (_prose_river, 0.05), (_prose_bio, 0.08), (_prose_howto, 0.08), (_prose_story, 0.08))


def _prose_text(g: _G) -> str:
    x = g.r.random()
    for kind, weight in _PROSE_KINDS:
        if x < weight:
            return kind(g)
        x -= weight
    return _PROSE_KINDS[-1][0](g)


def _near_duplicate_draw(seed: int, i: int) -> random.Random | None:
    """The stream that perturbs document i, or None when i is an original (decided from (seed, i) alone)."""
    rng = random.Random(f"smolrecipe-corpus/prose-dup/{seed}/{i}")
    return rng if i > 0 and rng.random() < PROSE_NEAR_DUPLICATE_RATE else None


def _perturb(text: str, g: _G) -> str:
    """One or two adjectives swapped and/or a sentence appended: close enough for MinHash to pair them."""
    # One edit, not both: word 5-gram Jaccard stays above ~0.8, where MinHash with datatrove's
    # default 14 buckets x 8 hashes pairs documents almost surely.
    mode = g.pick(("swap", "swap", "append"))
    changed = False
    if mode == "swap":
        tokens = text.split(" ")
        spots = [k for k, t in enumerate(tokens) if t in SWAPPABLE_ADJECTIVES]
        for k in g.sample(spots, min(len(spots), g.num(1, 2))):
            # same kind of first letter, so "a"/"an" before it stays right
            vowel = tokens[k][0] in "aeiou"
            tokens[k] = g.pick([a for a in sorted(SWAPPABLE_ADJECTIVES) if a != tokens[k] and (a[0] in "aeiou") == vowel])
            changed = True
        text = " ".join(tokens)
    if mode == "append" or not changed:
        text += " " + _fill(g, g.pick(_TOWN_FILLER), _town_fixed(g.pick(g.w.towns)))
    return text


def _prose_document(seed: int, i: int) -> str:
    dup = _near_duplicate_draw(seed, i)
    if dup is None:
        return _prose_text(_G(_rng("prose", seed, i)))
    original = 0
    for _ in range(16):  # copy an original, never another copy, so each pair is one edit apart
        j = dup.randrange(i)
        if _near_duplicate_draw(seed, j) is None:
            original = j
            break
    return _perturb(_prose_text(_G(_rng("prose", seed, original))), _G(dup))


# --------------------------------------------------------------------------------------------
# Forum
# --------------------------------------------------------------------------------------------

def _username(g: _G) -> str:
    style = g.num(0, 3)
    if style == 0:
        return f"{g.pick(ADJECTIVES)}_{g.pick(ANIMALS)}{g.num(1, 99)}"
    if style == 1:
        return f"{g.first_name().lower()}{g.num(10, 1999)}"
    if style == 2:
        return f"{g.pick(ROLES)}_of_{g.pick(g.w.towns).name.lower()}"
    return f"{g.pick(COLOURS)}{g.pick(OBJECTS)}"


def _thread_craft(g: _G) -> tuple[str, str, str, list[str]]:
    town = g.pick(g.w.towns)
    name, worker, material, products, tools, actions = town.craft
    action = g.pick(actions)
    title = g.pick((f"How long should I {action} {material} before I start?",
                    f"Help: everything I make comes out {g.pick(STATE_ADJECTIVES)}",
                    f"Best {g.pick(tools)} for a beginner in {name}?", f"Where to buy good {material} near {town.name}?"))
    body = (f"I have been trying {name} for {g.num(2, 30)} weeks now. Last {g.pick(WEEKDAYS)} I tried to {action} "
            f"{g.num(2, 12)} kilograms of {material} and it came out {g.pick(STATE_ADJECTIVES)} and {g.pick(STATE_ADJECTIVES)}. "
            f"{g.pick(('Any advice?', 'What am I doing wrong?', 'Is this normal?', 'Thanks in advance.'))}")
    answers = [
        f"{town.name} is the place for {name}. The {_plural(worker)} there {action} their {material} for about {g.num(5, 60)} "
        f"minutes and keep it {g.pick(STATE_ADJECTIVES)}. Go to the market on a {town.market_day} and ask.",
        f"Sounds like your {material} is too {g.pick(STATE_ADJECTIVES)}. Try a sharper {g.pick(tools)} and work {g.pick(ADVERBS)}.",
        f"I had the same problem for {g.num(2, 9)} months. What fixed it was working in smaller batches of {g.num(2, 8)}.",
        f"My {g.pick(KIN)} was {_article(worker)} in {g.pick(g.w.towns).name} and always said: never {action} {material} on a "
        f"{g.pick(('wet', 'cold', 'windy', 'hot'))} day.",
    ]
    return "Crafts", title, body, answers


def _thread_travel(g: _G) -> tuple[str, str, str, list[str]]:
    town = g.pick(g.w.towns)
    other = g.w.town(town.neighbour)
    title = g.pick((f"Walking from {town.name} to {other.name}?", f"Visiting {town.name} in {g.pick(MONTHS)}, tips?",
                    f"Is the ferry on the {town.river} still running?", f"First time in {town.region[4:]}"))
    body = (f"We are {g.pick(('a family of', 'a group of', 'two couples, so'))} {g.num(2, 7)} and plan to spend {g.num(2, 9)} days "
            f"around {town.name}. We like {g.pick(('walks', 'markets', 'festivals', 'boat trips', 'old churches', 'museums'))}, "
            f"old {_plural(g.pick(OBJECTS))} and good {g.pick(FOODS)}. "
            f"What should we not miss?")
    answers = [
        f"{town.name} to {other.name} is {town.distance} miles, an easy walk along the {town.river} if the weather holds.",
        f"Go on a {town.market_day}, that's market day in {town.name}. Try the {town.dish} at the inn by the {town.landmark}.",
        f"If you can, time it for the {town.festival} in {town.festival_month}. "
        f"It gets {g.pick(('busy', 'crowded', 'noisy', 'loud'))} but it is worth it.",
        f"The {town.landmark} is the best thing in {town.name}. "
        f"{other.name} is quieter; its {other.craft[0]} workshops are open to visitors.",
        f"Bring {_article(g.pick(('warm', 'waterproof', 'thick', 'woollen')))} coat. "
        f"{g.pick(WEATHER).capitalize()} is common in {g.pick(MONTHS)} up there.",
    ]
    return "Travel", title, body, answers


def _thread_history(g: _G) -> tuple[str, str, str, list[str]]:
    town = g.pick(g.w.towns)
    person = g.pick(g.w.people)
    if g.chance(0.5):
        title = g.pick((f"Who founded {town.name}?", f"How old is {town.name}?", f"Question about the history of {town.name}"))
        body = (f"My {g.pick(KIN)} says {town.name} is older than {g.pick(g.w.towns).name}, but I can't find anything. "
                f"Does anyone know when it was founded and by whom?")
        answers = [f"{town.name} was founded in {town.founded} by {town.founder}. It's in every guide to {town.region[4:]}.",
                   f"The date is {town.founded}. The old {town.landmark} is supposed to be on the spot where {town.founder} first settled.",
                   f"Agree with the above, {town.founded}. The town grew because of the ford on the {town.river}."]
    else:
        pr = _PRONOUNS[person.gender][0]
        title = g.pick((f"What is {person.name} famous for?", f"Looking for information on {person.name}"))
        body = f"I keep seeing the name {person.name} around {person.town}. Who was this?"
        answers = [f"{person.name} was {_article(person.trade)} from {person.town}, born in {person.born}. Best known for {person.work}.",
                   f"There's a plaque near the {g.w.town(person.town).landmark}. {pr.capitalize()} is a local hero.",
                   f"Famous for {person.work}. My {g.pick(KIN)} has a {g.pick(('book', 'painting', 'letter'))} about it."]
    return "Local history", title, body, answers


def _thread_food(g: _G) -> tuple[str, str, str, list[str]]:
    town = g.pick(g.w.towns)
    title = g.pick((f"Recipe for {town.dish} like they make in {town.name}?", f"What do I eat in {town.name}?"))
    body = (f"I had {town.dish} at the {town.festival} years ago and still think about it. Does anyone have a recipe "
            f"that uses {PLURAL[g.pick(FRUITS)]} or {_plural(g.pick(VEGETABLES))}?")
    grams, minutes = g.num(2, 9) * 50, g.num(2, 12) * 5
    answers = [
        f"Use {grams} grams of {g.pick(('flour', 'barley', 'butter', 'oats', 'cheese'))}, {g.num(1, 4)} eggs and a pinch of salt. "
        f"Bake for {minutes} minutes. That's how my {g.pick(KIN)} in {town.name} did it.",
        f"The secret in {town.name} is {g.pick(PLANTS)}. Just a little, added at the end.",
        f"The {town.dish} in {town.name} is best on {town.market_day}s, when everything is fresh from the market.",
    ]
    return "Food", title, body, answers


def _mid_sentence(answer: str) -> str:
    """An answer continued after a comma or colon: lower-cased, unless it starts with a name
    ("Fred Hazelmore.", "Mina Fernfield was from ..."), which keeps its capital."""
    return answer if answer.split()[0].rstrip(".,") in _proper_names() else answer[0].lower() + answer[1:]


@lru_cache(maxsize=1)
def _proper_names() -> frozenset[str]:
    return frozenset({t.name for t in world().towns} | set(FEMALE_NAMES) | set(MALE_NAMES))


def _thread_facts(g: _G) -> tuple[str, str, str, list[str]]:
    if g.chance(0.25):
        return _thread_person(g)
    town = g.pick(g.w.towns)
    question, answer = _town_qa(g, town)
    _, other = _town_qa(g, town)
    body = g.pick((f"Quick question about {town.name}, I could not find it in any of my {g.num(2, 9)} guide books.",
                   f"Settling an argument with my {g.pick(KIN)} here. {g.pick(('Loser buys the', 'Winner gets the', 'At stake: the'))} "
                   f"{g.pick(FOODS)}.", f"Going to {town.region[4:]} in {g.pick(MONTHS)} and wondering.",
                   f"My {g.pick(KIN)} asked me this {g.pick(WEEKDAYS)} and I had no idea.",
                   f"Writing a {g.pick(('school report', 'letter', 'song', 'story'))} about {town.name} and need this."))
    answers = [answer, f"{answer} Also, since you asked: {_mid_sentence(other)}", f"Yes, {_mid_sentence(answer)}"]
    return "Local facts", question, body, answers


def _thread_person(g: _G) -> tuple[str, str, str, list[str]]:
    person = g.pick(g.w.people)
    question, answer = _person_qa(g, person)
    other_question, other = _person_qa(g, person)
    while other_question == question:  # of three questions, the same one would repeat the answer
        other_question, other = _person_qa(g, person)
    body = g.pick((f"Came across the name {person.name} in an old {g.pick(('letter', 'ledger', 'newspaper', 'diary'))}.",
                   f"Doing some family history and {person.name} keeps coming up.",
                   f"My {g.pick(KIN)} says we are related to {person.name}. Is that even possible?",
                   f"Writing a {g.pick(('school report', 'letter', 'song', 'story'))} about {person.name} and need this."))
    answers = [answer, f"{answer} Also: {_mid_sentence(other)}", f"I looked it up. {answer}"]
    return "Local history", question, body, answers


# The facts thread twice: questions answered in pretraining text, for every town and person (held-out
# ones too), so that SFT only has to shape retrieval into chat answers.
_THREADS = (_thread_craft, _thread_travel, _thread_history, _thread_food, _thread_facts, _thread_facts)


def _forum_text(g: _G) -> str:
    section, title, body, answers = g.pick(_THREADS)(g)
    chosen = g.sample(answers, g.num(1, min(3, len(answers))))
    votes = sorted((g.num(0, 60) for _ in chosen), reverse=True)
    parts = [f"[{section}] {title}", f"Posted by {_username(g)} | {g.num(0, 40)} votes | {g.num(1, 28)} {g.pick(MONTHS)} "
             f"{g.num(1995, 2024)}", "", body]
    for k, (answer, vote) in enumerate(zip(chosen, votes, strict=True)):
        accepted = ", accepted" if k == 0 and g.chance(0.5) else ""
        parts += ["", f"Answer by {_username(g)} ({vote} votes{accepted}):", answer]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Arithmetic
# --------------------------------------------------------------------------------------------

_ITEMS = (("apple", "crate"), ("loaf", "basket"), ("candle", "box"), ("jar of honey", "crate"), ("bowl", "crate"),
          ("egg", "tray"), ("fish", "barrel"), ("rope", "bundle"), ("tile", "stack"), ("nail", "tin"), ("cheese", "shelf"),
          ("lantern", "cart"), ("basket", "stack"), ("plum", "sack"), ("ribbon", "box"), ("bottle", "crate"),
          ("button", "jar"), ("carrot", "sack"), ("pear", "basket"), ("cup", "box"), ("sheaf of wheat", "cart"),
          ("candle", "bundle"), ("horseshoe", "bag"), ("bead", "pouch"))


_NEUTRAL_ROLES = tuple(r for r in ROLES if r not in ("ferryman", "watchman", "dairymaid", "midwife"))


@dataclass
class _Problem:
    lines: list[str]
    steps: list[str]
    value: int
    answer: int | None = None
    question: str = ""


def _arith_start(g: _G, p: _Problem, who: str, pr: str, item: str, holder: str) -> None:
    kind = g.num(0, 2)
    if kind == 0:
        a = g.num(12, 240)
        p.lines.append(g.pick((f"{who} has {a} {_plural(item)}.", f"{who} starts the week with {a} {_plural(item)}.",
                               f"There are {a} {_plural(item)} in {who}'s shop.")))
        p.value = a
        return
    a, b = g.num(3, 25), g.num(2, 12)
    if kind == 1:
        p.lines.append(f"{who} makes {a} {_plural(item)} every day for {b} days.")
        p.steps.append(f"In {b} days {pr} makes {a} * {b} = {a * b} {_plural(item)}.")
    else:
        p.lines.append(f"{who} has {b} {_plural(holder)} with {a} {_plural(item)} in each.")
        p.steps.append(f"{pr.capitalize()} has {b} * {a} = {a * b} {_plural(item)}.")
    p.value = a * b


def _fresh(g: _G, p: _Problem, options: tuple[str, ...]) -> str:
    """A phrasing not used yet in this problem, so two steps never read the same."""
    used = {re.sub(r"\d+", "#", line) for line in p.lines}
    unused = [o for o in options if re.sub(r"\d+", "#", o) not in used]
    return g.pick(unused or options)


def _arith_add(g: _G, p: _Problem, who: str, pr: str, item: str, town: str) -> None:
    b = g.num(3, 90)
    p.lines.append(_fresh(g, p, (f"At the {town} market {pr} buys {b} more.", f"A neighbour gives {who} another {b}.",
                                 f"Then {pr} makes {b} more.", f"{pr.capitalize()} finds {b} more in the store room.",
                                 f"A trader from {town} brings {b} more.")))
    lead = "After that" if p.steps else "Now"
    p.steps.append(g.pick((f"{lead} {pr} has {p.value} + {b} = {p.value + b} {_plural(item)}.",
                           f"{p.value} + {b} = {p.value + b} {_plural(item)}.")))
    p.value += b


def _arith_sub(g: _G, p: _Problem, who: str, pr: str, item: str, town: str) -> None:
    b = g.num(1, p.value - 1)
    p.lines.append(_fresh(g, p, (f"{pr.capitalize()} sells {b} of them in {town}.", f"{b} of them are broken on the way to {town}.",
                                 f"{who} gives {b} to a friend.", f"{pr.capitalize()} uses {b} of them for the festival.",
                                 f"{pr.capitalize()} sends {b} to a customer in {town}.")))
    lead = "After that" if p.steps else "Then"
    p.steps.append(g.pick((f"{lead} {pr} has {p.value} - {b} = {p.value - b} {_plural(item)}.",
                           f"{p.value} - {b} = {p.value - b} {_plural(item)} are left.")))
    p.value -= b


def _arith_price(g: _G, p: _Problem, who: str, pr: str, item: str, room: int) -> None:
    b = g.num(2, 15)
    p.lines.append(f"{pr.capitalize()} sells all of them for {b} coins each.")
    p.steps.append(f"{pr.capitalize()} earns {p.value} * {b} = {p.value * b} coins.")
    p.value *= b
    if room > 1 and (len(p.steps) < 2 or g.chance(0.6)):  # every problem takes at least two steps
        spend = g.num(1, p.value - 1)
        p.lines.append(f"{pr.capitalize()} spends {spend} coins on {g.pick(FOODS)}.")
        p.steps.append(f"{p.value} - {spend} = {p.value - spend} coins are left.")
        p.value -= spend
    p.question = g.pick((f"How many coins does {who} have now?", f"How many coins does {pr} have?"))
    p.answer = p.value


def _arith_divide(g: _G, p: _Problem, who: str, pr: str, item: str, holder: str) -> None:
    b = g.num(2, 12)
    q, rem = divmod(p.value, b)
    p.lines.append(g.pick((f"{pr.capitalize()} packs them into {_plural(holder)} of {b}.",
                           f"{pr.capitalize()} puts them in {_plural(holder)} that hold {b} each.")))
    if g.chance(0.5):
        p.question = f"How many full {_plural(holder)} can {pr} fill?"
        p.steps.append(f"{p.value} / {b} = {q} remainder {rem}, so {pr} fills {q} {_plural(holder)}.")
        p.answer = q
    else:
        p.question = f"How many {_plural(item)} are left over?"
        left = f"1 {item} is" if rem == 1 else f"{rem} {_plural(item)} are"
        p.steps.append(f"{p.value} / {b} = {q} remainder {rem}, so {left} left over.")
        p.answer = rem


def arithmetic_problem(g: _G, max_steps: int = 3) -> tuple[str, str, int]:
    """(problem, worked solution, answer): 2 to max_steps operations on randomly drawn numbers."""
    gender = g.pick("fm")
    pr = _PRONOUNS[gender][0]
    who = g.pick(FEMALE_NAMES if gender == "f" else MALE_NAMES)
    if g.chance(0.5):
        who = f"{who} the {g.pick(_NEUTRAL_ROLES)}"
    item, holder = g.pick(_ITEMS)
    town = g.pick(g.w.towns).name
    p = _Problem([], [], 0)
    _arith_start(g, p, who, pr, item, holder)
    target = g.num(2, max_steps)
    while len(p.steps) < target and p.answer is None:
        room = target - len(p.steps)
        # Pricing and packing change the unit or end the story, so they only come last (pricing may
        # take two steps when there is room for a purchase afterwards).
        op = g.pick(("add", "sub", "sub") + (("price", "divide", "divide") if room <= 2 else ()))
        if op == "add":
            _arith_add(g, p, who, pr, item, town)
        elif op == "sub" and p.value > 2:
            _arith_sub(g, p, who, pr, item, town)
        elif op == "price" and (room == 1 or room == 2):
            _arith_price(g, p, who, pr, item, room)
        elif op == "divide" and room == 1:
            _arith_divide(g, p, who, pr, item, holder)
    if p.answer is None:
        p.answer = p.value
        p.question = g.pick((f"How many {_plural(item)} does {who} have now?", f"How many {_plural(item)} are there in the end?"))
    problem = " ".join(p.lines + [p.question])
    return problem, "\n".join(p.steps), p.answer


# A quiz's layouts: the question in four wordings (those the SFT chats use), the answer 1 to 5 tokens
# after it, on the same line or the next, after a speaker's name or none. Drilled in one layout
# ("Q: ... A:"), the demo's model computed sums in that layout only: asked in the chat template it
# answered 2 of 36 held-out sums that it answered as quizzes 32 times. The last two layouts are chat logs
# (as FAQ_LAYOUTS).
QUIZ_QUESTIONS = ("What is {a} {op} {b}?", "Compute {a} {op} {b}.", "{a} {op} {b} = ?", "How much is {a} {op} {b}?")
QUIZ_LAYOUTS = (("Q: ", "\nA: "), ("Question: ", "\nAnswer: "), ("", "\n"), ("", " "), ("", "\nAnswer: "),
                ("Teacher: ", "\nPupil: "), ("Teacher:\n", "\nPupil:\n"), ("User: ", "\nAssistant: "), ("user\n", "\nassistant\n"))


CHAT_LOG_LEADS = ("User: ", "user\n")
# The share of quiz pages laid out as chat logs. Held-out sums are never shown in the chat template
# (the SFT chats hold them out), so the route from a chat turn to the model's arithmetic is learned
# from the SFT pairs and these logs: with each layout equally likely (2 of 9 are chat logs) two seeds
# of four answered a third of the held-out sums in the chat template after SFT (README, twelfth round);
# at 0.4 seed 44 answered 0.56 instead of 0.33, the demo's seed 0.86 (0.94). Laying out the FAQ pages
# so too raised the sums further but lowered the facts (thirteenth round): those stay uniform.
CHAT_LOG_SHARE = 0.4


_QUIZ_CHAT_LOGS = tuple(layout for layout in QUIZ_LAYOUTS if layout[0] in CHAT_LOG_LEADS)
_QUIZ_OTHER_LAYOUTS = tuple(layout for layout in QUIZ_LAYOUTS if layout not in _QUIZ_CHAT_LOGS)


def _quiz_layout(g: _G) -> tuple[str, str]:
    return g.pick(_QUIZ_CHAT_LOGS if g.chance(CHAT_LOG_SHARE) else _QUIZ_OTHER_LAYOUTS)


def _table_value(op: str, a: int, b: int) -> int:
    """A single-digit sum or product, as the drills, the chats and the world suite state it."""
    return a + b if op == "+" else a * b


def _arithmetic_drill(g: _G) -> str:
    # Products more often than sums: every model answered held-out sums better than products, and
    # products are 20 of the world suite's 36 items (README, ninth round).
    op = "*" if g.chance(0.65) else "+"
    if g.chance(0.5):  # one table: "7 + 2 = 9", "7 + 3 = 10", ...
        a = g.num(2, 9)
        title = g.pick((f"The {'sums' if op == '+' else 'times table'} of {a}", f"Practice: {a} {op} n", f"Learn the {a}s"))
        pairs = [(a, b) if g.chance(0.5) else (b, a) for b in g.sample(range(2, 10), g.num(5, 8))]
    else:
        title = g.pick(("Mental arithmetic practice", "Quick sums", "Check your answers", "Drill"))
        pairs = [(g.num(2, 9), g.num(2, 9)) for _ in range(g.num(8, 14))]
    if g.chance(0.5):  # a quiz, one layout per page: the question form the world suite asks, and others
        (ask, reply), question = _quiz_layout(g), g.pick(QUIZ_QUESTIONS)
        quiz = [f"{ask}{question.format(a=a, op=op, b=b)}{reply}{_table_value(op, a, b)}" for a, b in pairs]
        return g.pick(("Quiz", "Test yourself", "Questions and answers")) + "\n\n" + "\n\n".join(quiz)
    lines = [f"{a} {op} {b} = {_table_value(op, a, b)}" for a, b in pairs]
    return f"{title}\n" + "\n".join(lines)


def _arithmetic_text(g: _G) -> str:
    # Mostly drills of the single-digit tables (2 to 9: a 1 teaches nothing): with 70% drills and
    # 1s included, the demo's model answered 4 of 20 held-out products after stage 3 (README); at
    # 85% one seed of three still answered 0.22 of the held-out sums after stage 3 (ninth round).
    if g.chance(0.93):
        return _arithmetic_drill(g)
    problem, solution, answer = arithmetic_problem(g)
    head = g.pick(("Problem:", "Question:", "Word problem:"))
    return f"{head} {problem}\nSolution:\n{solution}\nThe answer is {answer}."


# --------------------------------------------------------------------------------------------
# Python functions
# --------------------------------------------------------------------------------------------

_PY_NOUNS = _words("apples crates loaves baskets lanterns coins orders scores prices weights readings temperatures "
                   "distances votes tickets candles bottles rolls eggs nails tiles ropes jars sacks parcels bowls "
                   "visitors catches harvests fares wages rents ledgers sales")
_PY_WORDS = _words("river mill lantern willow harbour market amber heron kettle orchard ferry cider thimble bramble "
                   "basket ladle quarry meadow bell anvil loom saddle barley clover")
_BIG = {">": ("heavy", "large", "big", "high"), ">=": ("large", "big", "high"), "<": ("small", "light", "low"),
        "<=": ("light", "small", "cheap")}
_OP_WORDS = {">": "greater than", ">=": "at least", "<": "less than", "<=": "at most"}


@dataclass
class _Func:
    name: str
    params: list[str]
    summary: str
    body: list[str]
    example: tuple | None = None
    returns: str = ""
    prelude: list[str] = field(default_factory=list)  # module-level lines it needs: a constant, an import
    source: str | None = None  # a whole definition (a class), rendered as is


def _param(name: str, typ: str, hints: bool, default=None) -> str:
    if default is None:
        return f"{name}: {typ}" if hints else name
    return f"{name}: {typ} = {default!r}" if hints else f"{name}={default!r}"


def _returns(typ: str, hints: bool) -> str:
    return f" -> {typ}" if hints else ""


def _singular(noun: str) -> str:
    """The loop variable for a list named `noun` (never the same name, or the loop would shadow it)."""
    special = {"loaves": "loaf", "boxes": "box", "catches": "catch", "harvests": "harvest"}
    if noun in special:
        return special[noun]
    return noun[:-1] if noun.endswith("s") else "item"


def _ints(g: _G, lo: int, hi: int, k_lo: int = 3, k_hi: int = 7) -> list[int]:
    return [g.num(lo, hi) for _ in range(g.num(k_lo, k_hi))]


def _py_filtered_aggregate(g: _G, h: bool) -> _Func:
    items, op = g.pick(_PY_NOUNS), g.pick(tuple(_BIG))
    x = _singular(items) if g.chance(0.7) else g.pick(("x", "value", "v"))
    limit = g.num(2, 50)
    agg = g.pick(("total", "count", "largest"))
    cond = f"{x} {op} limit"
    params, words = [_param(items, "list[int]", h), _param("limit", "int", h, limit)], _OP_WORDS[op]
    if agg == "total":
        name = f"{g.pick(('total', 'sum'))}_{g.pick(_BIG[op])}_{items}"
        summary = g.pick((f"Return the sum of the {items} that are {words} limit.", f"Add up every value in {items} {words} limit."))
        acc = g.pick(("total", "result", "acc"))
        body = [f"return sum({x} for {x} in {items} if {cond})"] if g.chance(0.4) else [
            f"{acc} = 0", f"for {x} in {items}:", f"    if {cond}:", f"        {acc} += {x}", f"return {acc}"]
        return _Func(name, params, summary, body, (_ints(g, 0, 60),), _returns("int", h))
    if agg == "count":
        name = f"{g.pick(('count', 'how_many', 'number_of'))}_{g.pick(_BIG[op])}_{items}"
        summary = g.pick((f"Count how many {items} are {words} limit.", f"Return the number of {items} {words} limit."))
        acc = g.pick(("count", "n", "hits"))
        body = [f"return len([{x} for {x} in {items} if {cond}])"] if g.chance(0.4) else [
            f"{acc} = 0", f"for {x} in {items}:", f"    if {cond}:", f"        {acc} += 1", f"return {acc}"]
        return _Func(name, params, summary, body, (_ints(g, 0, 60),), _returns("int", h))
    name = f"{g.pick(('largest', 'biggest', 'max'))}_{g.pick(_BIG[op])}_{items}"
    summary = f"Return the largest of the {items} {words} limit, or None if there is none."
    best = g.pick(("best", "top", "found"))
    body = [f"return max(({x} for {x} in {items} if {cond}), default=None)"] if g.chance(0.4) else [
        f"{best} = None", f"for {x} in {items}:", f"    if {cond} and ({best} is None or {x} > {best}):", f"        {best} = {x}",
        f"return {best}"]
    return _Func(name, params, summary, body, (_ints(g, 0, 60),), _returns("int | None", h))


def _py_transform(g: _G, h: bool) -> _Func:
    items = g.pick(_PY_NOUNS)
    x = _singular(items) if g.chance(0.7) else g.pick(("x", "value", "n"))
    k, c = g.num(2, 9), g.num(1, 20)
    kind = g.pick(("scale", "shift", "square", "halve", "cap"))
    expr, verb, desc = {"scale": (f"{x} * {k}", "scale", f"multiplied by {k}"), "shift": (f"{x} + {c}", "shift", f"plus {c}"),
                        "square": (f"{x} * {x}", "square", "squared"), "halve": (f"{x} // 2", "halve", "halved (rounding down)"),
                        "cap": (f"min({x}, {c + 10})", "cap", f"capped at {c + 10}")}[kind]
    keep = g.pick(("", "", "even", "odd", "positive"))
    cond = {"": "", "even": f" if {x} % 2 == 0", "odd": f" if {x} % 2 == 1", "positive": f" if {x} > 0"}[keep]
    summary = f"Return a new list with each {keep + ' ' if keep else ''}value in {items} {desc}."
    style = g.num(0, 2)
    if style == 0:
        body = [f"return [{expr} for {x} in {items}{cond}]"]
    elif style == 1 or keep:
        out = g.pick(("result", "out", "new"))
        body = [f"{out} = []", f"for {x} in {items}:"] + (
            [f"    {cond.strip()}:", f"        {out}.append({expr})"] if keep else [f"    {out}.append({expr})"]) + [f"return {out}"]
    else:
        body = [f"return list(map(lambda {x}: {expr}, {items}))"]
    name = f"{verb}_{keep + '_' if keep else ''}{items}"
    return _Func(name, [_param(items, "list[int]", h)], summary, body, (_ints(g, -5, 30),), _returns("list[int]", h))


def _py_string(g: _G, h: bool) -> _Func:
    s = g.pick(("text", "line", "sentence", "phrase", "label", "title", "name", "s"))
    kind = g.num(0, 10)
    words = " ".join(g.sample(_PY_WORDS, g.num(2, 4)))
    p, rs, rb, ri = [_param(s, "str", h)], _returns("str", h), _returns("bool", h), _returns("int", h)
    if kind == 0:
        vowels = g.pick(("aeiou", "aeiouy"))
        body = g.pick(([f"return sum(1 for ch in {s}.lower() if ch in {vowels!r})"],
                       ["count = 0", f"for ch in {s}.lower():", f"    if ch in {vowels!r}:", "        count += 1", "return count"]))
        return _Func(f"count_vowels_in_{s}", p, f"Count the letters of {s} that are in {vowels!r}.", body, (words,), ri)
    if kind == 1:
        body = g.pick(([f"return \" \".join(word.capitalize() for word in {s}.split())"], [f"return {s}.title()"]))
        return _Func(f"{g.pick(('capitalise', 'title_case'))}_{s}", p, f"Return {s} with the first letter of every word in upper case.",
                     body, (words,), rs)
    if kind == 2:
        return _Func(f"acronym_of_{s}", p, f"Return the upper-case first letters of the words in {s}.",
                     [f"return \"\".join(word[0].upper() for word in {s}.split() if word)"], (words,), rs)
    if kind == 3:
        sep = g.pick((" ", ", ", " / ", "-"))
        body = g.pick((["words = " + f"{s}.split()", "words.reverse()", f"return {sep!r}.join(words)"],
                       [f"return {sep!r}.join(reversed({s}.split()))"]))
        return _Func(f"reverse_words_in_{s}", p, f"Return the words of {s} in reverse order, joined by {sep!r}.", body, (words,), rs)
    if kind == 4:
        body = g.pick(([f"cleaned = \"\".join(ch.lower() for ch in {s} if not ch.isspace())", "return cleaned == cleaned[::-1]"],
                       [f"letters = [ch.lower() for ch in {s} if ch.isalpha()]", "return letters == letters[::-1]"]))
        return _Func(f"is_palindrome_{s}" if g.chance(0.5) else "is_palindrome", p,
                     f"Return True if {s} reads the same backwards, ignoring spaces and case.", body,
                     (g.pick(("level", "never odd or even", words, "step on no pets", "a mill")),), rb)
    if kind == 5:
        body = g.pick((["best = \"\"", f"for word in {s}.split():", "    if len(word) > len(best):", "        best = word", "return best"],
                       [f"return max({s}.split(), key=len, default=\"\")"]))
        return _Func(f"longest_word_in_{s}", p, f"Return the longest word in {s} (the first one on ties).", body, (words,), rs)
    if kind == 6:
        ch = g.pick("aeiour")
        return _Func(f"remove_{ch}_from_{s}", p, f"Return {s} without any {ch!r} characters.",
                     g.pick(([f"return {s}.replace({ch!r}, \"\")"], [f"return \"\".join(c for c in {s} if c != {ch!r})"])), (words,), rs)
    if kind == 7:
        width = g.num(12, 24)
        return _Func(f"pad_{s}", p + [_param("width", "int", h, width), _param("fill", "str", h, ".")],
                     f"Pad {s} on the right with fill up to width characters.",
                     g.pick(([f"if len({s}) >= width:", f"    return {s}", f"return {s} + fill * (width - len({s}))"],
                             [f"return {s}.ljust(width, fill)"])), (words,), rs)
    if kind == 8:
        return _Func(f"snake_case_{s}", p, f"Turn {s} into lower_snake_case.", [f"return \"_\".join({s}.lower().split())"],
                     (words.title(),), rs)
    if kind == 9:
        n = g.num(4, 9)
        return _Func(f"shorten_{s}", p + [_param("limit", "int", h, n)],
                     f"Return {s} cut to at most limit characters, ending in '...' when it was cut.",
                     [f"if len({s}) <= limit:", f"    return {s}", f"return {s}[:limit] + \"...\""], (words,), rs)
    return _Func(f"count_words_in_{s}", p, f"Return how many words {s} has.", [f"return len({s}.split())"], (words,), ri)


def _py_counting(g: _G, h: bool) -> _Func:
    kind = g.num(0, 3)
    counts = g.pick(("counts", "tally", "freq", "seen"))
    if kind == 0:
        w = g.pick(("word", "w", "token"))
        sample = " ".join(g.pick(_PY_WORDS) for _ in range(g.num(4, 7)))
        if g.chance(0.3):
            return _Func(g.pick(("word_counts", "count_words", "word_frequencies")), [_param("text", "str", h)],
                         "Map each word of text to how often it occurs.", ["return dict(Counter(text.lower().split()))"],
                         (sample,), _returns("dict[str, int]", h), ["from collections import Counter"])
        return _Func(g.pick(("word_counts", "count_words", "word_frequencies", "tally_words")), [_param("text", "str", h)],
                     g.pick(("Map each word of text to how often it occurs.", "Count how many times each word appears in text.")),
                     [f"{counts} = {{}}", f"for {w} in text.lower().split():", f"    {counts}[{w}] = {counts}.get({w}, 0) + 1",
                      f"return {counts}"], (sample,), _returns("dict[str, int]", h))
    if kind == 1:
        key = g.pick(("first letter", "length"))
        expr = "word[0]" if key == "first letter" else "len(word)"
        groups = g.pick(("groups", "by_key", "buckets"))
        return _Func(f"group_by_{key.replace(' ', '_')}", [_param("words", "list[str]", h)],
                     f"Group words into lists keyed by their {key}.",
                     [f"{groups} = {{}}", "for word in words:", f"    {groups}.setdefault({expr}, []).append(word)", f"return {groups}"],
                     (g.sample(_PY_WORDS, g.num(3, 6)),), _returns("dict", h))
    if kind == 2:
        items = g.pick(_PY_NOUNS)
        return _Func(f"merge_{items}_counts", [_param("first", "dict[str, int]", h), _param("second", "dict[str, int]", h)],
                     f"Add two dictionaries of {items} counts key by key.",
                     ["merged = dict(first)", "for key, value in second.items():", "    merged[key] = merged.get(key, 0) + value",
                      "return merged"],
                     ({w: g.num(1, 9) for w in g.sample(_PY_WORDS, 2)}, {w: g.num(1, 9) for w in g.sample(_PY_WORDS, 2)}),
                     _returns("dict[str, int]", h))
    return _Func(g.pick(("invert", "swap_keys_and_values", "reverse_lookup")), [_param("mapping", "dict", h)],
                 "Return a dictionary with the keys and values of mapping swapped.",
                 g.pick((["return {value: key for key, value in mapping.items()}"],
                         ["result = {}", "for key, value in mapping.items():", "    result[value] = key", "return result"])),
                 ({w: g.num(1, 99) for w in g.sample(_PY_WORDS, 3)},), _returns("dict", h))


def _py_numeric(g: _G, h: bool) -> _Func:
    kind = g.num(0, 7)
    n = g.pick(("n", "number", "count", "value", "k"))
    pn, ri, rb = [_param(n, "int", h)], _returns("int", h), _returns("bool", h)
    if kind == 0:
        name = g.pick(("gcd", "greatest_common_divisor"))
        body = g.pick((["while b:", "    a, b = b, a % b", "return a"], ["if b == 0:", "    return a", f"return {name}(b, a % b)"]))
        return _Func(name, [_param("a", "int", h), _param("b", "int", h)], "Return the greatest common divisor of a and b.", body,
                     (g.num(2, 30) * 6, g.num(2, 30) * 4), ri)
    if kind == 1:
        name = g.pick(("factorial", "product_up_to"))
        body = g.pick((["result = 1", f"for k in range(2, {n} + 1):", "    result *= k", "return result"],
                       [f"if {n} <= 1:", "    return 1", f"return {n} * {name}({n} - 1)"]))
        return _Func(name, pn, f"Return 1 * 2 * ... * {n}.", body, (g.num(3, 10),), ri)
    if kind == 2:
        body = g.pick((["a, b = 0, 1", f"for _ in range({n}):", "    a, b = b, a + b", "return a"],
                       ["numbers = [0, 1]", f"while len(numbers) <= {n}:", "    numbers.append(numbers[-1] + numbers[-2])",
                        f"return numbers[{n}]"]))
        return _Func(g.pick(("fibonacci", "nth_fibonacci")), pn, f"Return the {n}-th Fibonacci number, counting from 0.", body,
                     (g.num(5, 20),), ri)
    if kind == 3:
        body = g.pick(([f"return sum(int(d) for d in str(abs({n})))"],
                       [f"{n} = abs({n})", "total = 0", f"while {n}:", f"    total += {n} % 10", f"    {n} //= 10", "return total"]))
        return _Func(g.pick(("digit_sum", "sum_of_digits")), pn, f"Return the sum of the decimal digits of {n}.", body,
                     (g.num(100, 99999),), ri)
    if kind == 4:
        return _Func(g.pick(("is_prime", "check_prime")), pn, f"Return True if {n} is a prime number.",
                     [f"if {n} < 2:", "    return False", "d = 2", f"while d * d <= {n}:", f"    if {n} % d == 0:", "        return False",
                      "    d += 1", "return True"], (g.num(2, 120),), rb)
    if kind == 5:
        lo, hi = g.num(0, 10), g.num(20, 100)
        body = g.pick(([f"return max(low, min({n}, high))"],
                       [f"if {n} < low:", "    return low", f"if {n} > high:", "    return high", f"return {n}"]))
        return _Func(g.pick(("clamp", "limit_value", "keep_in_range")), pn + [_param("low", "int", h, lo), _param("high", "int", h, hi)],
                     f"Return {n} limited to the range low..high.", body, (g.num(-20, 130),), ri)
    if kind == 6:
        items = g.pick(_PY_NOUNS)
        x = _singular(items)
        return _Func(f"running_total_of_{items}", [_param(items, "list[int]", h)], f"Return the running totals of {items}.",
                     ["totals = []", "total = 0", f"for {x} in {items}:", f"    total += {x}", "    totals.append(total)", "return totals"],
                     (_ints(g, 1, 20, 3, 6),), _returns("list[int]", h))
    return _Func(g.pick(("collatz_steps", "steps_to_one")), pn, f"Count the Collatz steps it takes {n} to reach 1.",
                 ["steps = 0", f"while {n} != 1:", f"    {n} = {n} // 2 if {n} % 2 == 0 else 3 * {n} + 1", "    steps += 1",
                  "return steps"],
                 (g.num(2, 60),), ri)


def _py_stats(g: _G, h: bool) -> _Func:
    items = g.pick(_PY_NOUNS)
    kind = g.num(0, 2)
    p = [_param(items, "list[int]", h)]
    example = (_ints(g, 1, 50, 2, 7),)
    if kind == 0:
        return _Func(f"{g.pick(('average', 'mean'))}_{items}", p, f"Return the mean of {items}, or 0.0 for an empty list.",
                     [f"if not {items}:", "    return 0.0", f"return round(sum({items}) / len({items}), 2)"], example, _returns("float", h))
    if kind == 1:
        return _Func(f"spread_of_{items}", p, f"Return the difference between the largest and smallest of {items}.",
                     [f"if not {items}:", "    return 0", f"return max({items}) - min({items})"], example, _returns("int", h))
    return _Func(f"median_{items}", p, f"Return the median of {items}.",
                 [f"ordered = sorted({items})", "middle = len(ordered) // 2", "if len(ordered) % 2 == 1:", "    return ordered[middle]",
                  "return (ordered[middle - 1] + ordered[middle]) / 2"], example, _returns("float", h))


def _py_lookup(g: _G, h: bool) -> _Func:
    """Functions over a table of the world's facts, so code and prose agree about the same towns."""
    towns = g.sample(g.w.towns, g.num(3, 5))
    kind = g.num(0, 3)
    if kind == 0:
        const, values = "RIVERS", [t.river for t in towns]
        func = _Func(g.pick(("river_of", "river_for_town")), [_param("town", "str", h)],
                     "Return the river that town lies on, or None when it is not in the table.", [f"return {const}.get(town)"],
                     (towns[0].name,), _returns("str | None", h))
    elif kind == 1:
        const, values = "MARKET_DAYS", [t.market_day for t in towns]
        func = _Func(g.pick(("market_day", "market_day_of")), [_param("town", "str", h), _param("default", "str", h, "Saturday")],
                     "Return the weekday of the market in town.", [f"return {const}.get(town, default)"], (towns[-1].name,),
                     _returns("str", h))
    elif kind == 2:
        const, values = "FOUNDED", [t.founded for t in towns]
        year = g.num(1700, 1950)
        func = _Func(g.pick(("age_of_town", "years_since_founding")), [_param("town", "str", h), _param("year", "int", h, year)],
                     "Return how many years old town was in the given year.", [f"return year - {const}[town]"], (towns[0].name,),
                     _returns("int", h))
    else:
        const, values = "CRAFTS", [t.craft[0] for t in towns]
        func = _Func(g.pick(("towns_with_craft", "towns_known_for")), [_param("craft", "str", h)],
                     "Return the towns in the table known for craft, in alphabetical order.",
                     [f"return sorted(town for town, known_for in {const}.items() if known_for == craft)"], (values[0],),
                     _returns("list[str]", h))
    func.prelude = [f"{const} = {{"] + [f"    {t.name!r}: {v!r}," for t, v in zip(towns, values, strict=True)] + ["}"]
    return func


def _py_format(g: _G, h: bool) -> _Func:
    kind = g.num(0, 2)
    if kind == 0:
        unit = g.pick(("coins", "pennies", "shillings"))
        return _Func(g.pick(("format_order", "receipt_line", "order_line")),
                     [_param("item", "str", h), _param("quantity", "int", h), _param("price", "int", h)],
                     f"Return a receipt line such as '3 x bowl = 12 {unit}'.",
                     ["total = quantity * price", "return f\"{quantity} x {item} = {total} " + unit + "\""],
                     (g.pick(_PY_WORDS), g.num(1, 9), g.num(1, 20)), _returns("str", h))
    if kind == 1:
        return _Func(g.pick(("pluralise", "with_count")), [_param("word", "str", h), _param("count", "int", h)],
                     "Return count and word together, adding an 's' unless count is 1.",
                     ["if count == 1:", "    return f\"1 {word}\"", "return f\"{count} {word}s\""], (g.pick(_PY_WORDS), g.num(0, 5)),
                     _returns("str", h))
    width = g.num(10, 16)
    return _Func(g.pick(("table_row", "format_row")),
                 [_param("name", "str", h), _param("amount", "int", h), _param("width", "int", h, width)],
                 "Return name left-aligned and amount right-aligned in a row of width + 6 characters.",
                 ["return name.ljust(width) + str(amount).rjust(6)"], (g.pick(_PY_WORDS), g.num(1, 999)), _returns("str", h))


def _py_search(g: _G, h: bool) -> _Func:
    items = g.pick(_PY_NOUNS)
    kind = g.num(0, 3)
    p = [_param(items, "list[int]", h)]
    if kind == 0:
        limit = g.num(5, 40)
        return _Func("first_index_above", p + [_param("limit", "int", h, limit)],
                     f"Return the index of the first of {items} above limit, or -1 if there is none.",
                     [f"for index, value in enumerate({items}):", "    if value > limit:", "        return index", "return -1"],
                     (_ints(g, 0, 60),), _returns("int", h))
    if kind == 1:
        return _Func(f"has_duplicate_{items}", p, f"Return True if any value appears twice in {items}.",
                     g.pick(([f"return len(set({items})) != len({items})"],
                             ["seen = set()", f"for value in {items}:", "    if value in seen:", "        return True",
                              "    seen.add(value)",
                              "return False"])), (_ints(g, 0, 12),), _returns("bool", h))
    if kind == 2:
        target = g.num(10, 40)
        return _Func("pairs_adding_up_to", p + [_param("target", "int", h, target)],
                     f"Return the index pairs (i, j), i < j, of {items} whose values add up to target.",
                     ["pairs = []", f"for i in range(len({items})):", f"    for j in range(i + 1, len({items})):",
                      f"        if {items}[i] + {items}[j] == target:", "            pairs.append((i, j))", "return pairs"],
                     (_ints(g, 0, target, 4, 7),), _returns("list[tuple[int, int]]", h))
    return _Func(f"index_of_largest_{_singular(items)}", p, f"Return the position of the largest value in {items} (the first on ties).",
                 ["best = 0", f"for i in range(1, len({items})):", f"    if {items}[i] > {items}[best]:", "        best = i",
                  "return best"],
                 (_ints(g, 0, 99),), _returns("int", h))


def _py_parse(g: _G, h: bool) -> _Func:
    kind = g.num(0, 3)
    if kind == 0:
        default = g.num(0, 1) - 1
        return _Func(g.pick(("parse_quantity", "to_int", "read_number")), [_param("text", "str", h), _param("default", "int", h, default)],
                     "Return text as an integer, or default when it is not a number.",
                     ["try:", "    return int(text.strip())", "except ValueError:", "    return default"],
                     (g.pick((f" {g.num(1, 500)} ", "twelve", str(g.num(1, 99)))),), _returns("int", h))
    if kind == 1:
        pairs = ";".join(f"{w}={g.num(1, 30)}" for w in g.sample(_PY_WORDS, g.num(2, 4)))
        return _Func(g.pick(("parse_settings", "parse_pairs")), [_param("text", "str", h)],
                     "Turn 'a=1;b=2' into {'a': 1, 'b': 2}, skipping empty parts.",
                     ["result = {}", "for part in text.split(\";\"):", "    if not part.strip():", "        continue",
                      "    key, value = part.split(\"=\")", "    result[key.strip()] = int(value)", "return result"],
                     (pairs,), _returns("dict[str, int]", h))
    if kind == 2:
        return _Func(g.pick(("safe_divide", "share_out")), [_param("total", "int", h), _param("people", "int", h)],
                     "Return total divided by people, or None when there is nobody to share with.",
                     ["try:", "    return total / people", "except ZeroDivisionError:", "    return None"],
                     (g.num(10, 90), g.pick((0, g.num(2, 9)))), _returns("float | None", h))
    return _Func(g.pick(("price_in_coins", "parse_price")), [_param("label", "str", h)],
                 "Return the number at the start of a label such as '12 coins'.", ["return int(label.split()[0])"],
                 (f"{g.num(1, 200)} coins",), _returns("int", h))


def _py_sorting(g: _G, h: bool) -> _Func:
    kind = g.num(0, 2)
    if kind == 0:
        return _Func(g.pick(("sort_by_length", "shortest_first")), [_param("words", "list[str]", h), _param("reverse", "bool", h, False)],
                     "Return words sorted by length, then alphabetically.",
                     ["return sorted(words, key=lambda word: (len(word), word), reverse=reverse)"],
                     (g.sample(_PY_WORDS, g.num(3, 5)),), _returns("list[str]", h))
    if kind == 1:
        k = g.num(1, 3)
        return _Func(g.pick(("top_sellers", "best_selling", "leaders")), [_param("sales", "dict[str, int]", h), _param("k", "int", h, k)],
                     "Return the k names with the highest sales, best first.",
                     ["ranked = sorted(sales.items(), key=lambda pair: pair[1], reverse=True)", "return [name for name, _ in ranked[:k]]"],
                     ({w: g.num(1, 90) for w in g.sample(_PY_WORDS, 4)},), _returns("list[str]", h))
    return _Func(g.pick(("rank_scores", "ranking")), [_param("scores", "dict[str, int]", h)],
                 "Return (name, score) pairs, highest score first and ties in alphabetical order.",
                 ["return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))"],
                 ({w: g.num(1, 9) for w in g.sample(_PY_WORDS, 4)},), _returns("list[tuple[str, int]]", h))


def _py_zip(g: _G, h: bool) -> _Func:
    kind = g.num(0, 2)
    if kind == 0:
        return _Func(g.pick(("total_cost", "bill_total")), [_param("quantities", "list[int]", h), _param("prices", "list[int]", h)],
                     "Return the sum of quantity * price over matching positions.",
                     g.pick((["return sum(q * p for q, p in zip(quantities, prices))"],
                             ["total = 0", "for quantity, price in zip(quantities, prices):", "    total += quantity * price",
                              "return total"])),
                     (_ints(g, 1, 9, 3, 3), _ints(g, 1, 20, 3, 3)), _returns("int", h))
    if kind == 1:
        items = g.pick(_PY_NOUNS)
        return _Func(f"changes_in_{items}", [_param(items, "list[int]", h)], f"Return the differences between neighbouring {items}.",
                     [f"return [b - a for a, b in zip({items}, {items}[1:])]"], (_ints(g, 0, 50, 3, 6),), _returns("list[int]", h))
    return _Func(g.pick(("pair_up", "as_table")), [_param("names", "list[str]", h), _param("values", "list[int]", h)],
                 "Return a dictionary mapping each name to the value at the same position.", ["return dict(zip(names, values))"],
                 (g.sample(_PY_WORDS, 3), _ints(g, 1, 9, 3, 3)), _returns("dict[str, int]", h))


def _py_lists(g: _G, h: bool) -> _Func:
    kind = g.num(0, 3)
    if kind == 0:
        return _Func(g.pick(("chunk", "in_batches", "split_into_groups")),
                     [_param("items", "list", h), _param("size", "int", h, g.num(2, 4))],
                     "Split items into lists of at most size elements.",
                     ["return [items[i:i + size] for i in range(0, len(items), size)]"], (_ints(g, 1, 20, 4, 8),),
                     _returns("list[list]", h))
    if kind == 1:
        return _Func(g.pick(("unique_in_order", "drop_repeats", "dedupe")), [_param("items", "list", h)],
                     "Return items without repeats, keeping the first occurrence of each.",
                     ["seen = set()", "result = []", "for item in items:", "    if item not in seen:", "        seen.add(item)",
                      "        result.append(item)", "return result"], (_ints(g, 1, 6, 5, 8),), _returns("list", h))
    if kind == 2:
        return _Func(g.pick(("flatten", "join_rows")), [_param("rows", "list[list]", h)], "Return the elements of rows as one flat list.",
                     g.pick((["return [value for row in rows for value in row]"],
                             ["flat = []", "for row in rows:", "    flat.extend(row)", "return flat"])),
                     ([_ints(g, 1, 9, 1, 3) for _ in range(g.num(2, 3))],), _returns("list", h))
    return _Func(g.pick(("rotate", "rotate_left")), [_param("items", "list", h), _param("steps", "int", h, 1)],
                 "Return items rotated left by steps places.",
                 ["if not items:", "    return []", "steps %= len(items)", "return items[steps:] + items[:steps]"],
                 (_ints(g, 1, 9, 3, 6), g.num(1, 4)), _returns("list", h))


def _py_units(g: _G, h: bool) -> _Func:
    kind = g.num(0, 3)
    if kind == 0:
        name, a, b, factor, add = g.pick((("celsius_to_fahrenheit", "celsius", "degrees Fahrenheit", "9 / 5", " + 32"),
                                           ("kilograms_to_pounds", "kilograms", "pounds", "2.2046", ""),
                                           ("miles_to_kilometres", "miles", "kilometres", "1.609", ""),
                                           ("litres_to_pints", "litres", "pints", "1.76", "")))
        return _Func(name, [_param(a, "float", h)], f"Convert {a} to {b}, rounded to one decimal place.",
                     [f"return round({a} * {factor}{add}, 1)"], (g.num(0, 100),), _returns("float", h))
    if kind == 1:
        return _Func(g.pick(("hours_and_minutes", "split_minutes")), [_param("minutes", "int", h)],
                     "Return (hours, minutes) for a number of minutes.", ["return divmod(minutes, 60)"], (g.num(30, 600),),
                     _returns("tuple[int, int]", h))
    if kind == 2:
        coins = tuple(sorted(g.sample((50, 25, 20, 10, 5, 2), 3), reverse=True)) + (1,)
        return _Func(g.pick(("make_change", "coins_for")), [_param("amount", "int", h), _param("coins", "tuple", h, coins)],
                     "Return the coins that make up amount, largest first, taking as many large coins as possible.",
                     ["result = []", "for coin in coins:", "    while amount >= coin:", "        amount -= coin",
                      "        result.append(coin)",
                      "return result"], (g.num(3, 99),), _returns("list[int]", h))
    speed = g.num(2, 6)
    return _Func(g.pick(("travel_time", "walking_time")), [_param("miles", "float", h), _param("miles_per_hour", "float", h, speed)],
                 "Return (hours, minutes) needed to cover the given miles.",
                 ["minutes = round(miles * 60 / miles_per_hour)", "return divmod(minutes, 60)"], (g.num(2, 40),),
                 _returns("tuple[int, int]", h))


def _py_dates(g: _G, h: bool) -> _Func:
    kind = g.num(0, 2)
    if kind == 0:
        return _Func("is_leap_year", [_param("year", "int", h)], "Return True if year is a leap year in the Gregorian calendar.",
                     ["return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)"], (g.pick((1900, 2000, g.num(1800, 2100))),),
                     _returns("bool", h))
    if kind == 1:
        return _Func(g.pick(("season_of", "season_for_month")), [_param("month", "int", h)],
                     "Return the season of a month numbered 1 to 12 (northern hemisphere).",
                     ["if month in (12, 1, 2):", "    return \"winter\"", "if month in (3, 4, 5):", "    return \"spring\"",
                      "if month in (6, 7, 8):", "    return \"summer\"", "return \"autumn\""], (g.num(1, 12),), _returns("str", h))
    return _Func(g.pick(("weekday_after", "day_after")), [_param("day", "str", h), _param("days", "int", h)],
                 "Return the weekday that comes the given number of days after day.",
                 [f"names = {list(WEEKDAYS)!r}", "return names[(names.index(day) + days) % 7]"],
                 (g.pick(WEEKDAYS), g.num(1, 20)), _returns("str", h))


def _py_class(g: _G, h: bool) -> _Func:
    holder = g.pick(("Basket", "Crate", "Shelf", "Cart", "Barrel", "Satchel"))
    items = g.pick(_PY_NOUNS)
    item = _singular(items)
    capacity = g.num(3, 20)
    lines = [f"class {holder}:", f'    """A {holder.lower()} that holds at most `capacity` {items}."""', "",
             f"    def __init__(self, {_param('capacity', 'int', h, capacity)}){_returns('None', h)}:",
             "        self.capacity = capacity", f"        self.{items} = []", "",
             f"    def add(self, {item}){_returns('bool', h)}:",
             f'        """Add one {item}; return False when the {holder.lower()} is full."""',
             f"        if len(self.{items}) >= self.capacity:", "            return False", f"        self.{items}.append({item})",
             "        return True", "", f"    def space_left(self){_returns('int', h)}:",
             f"        return self.capacity - len(self.{items})"]
    return _Func(holder, [], f"A {holder.lower()} class with a capacity.", [], source="\n".join(lines) + "\n")


_PY_BUILDERS = (_py_filtered_aggregate, _py_transform, _py_string, _py_counting, _py_numeric, _py_stats, _py_lookup, _py_format,
                _py_search, _py_parse, _py_sorting, _py_zip, _py_lists, _py_units, _py_dates, _py_class)
# The short, self-contained ones, for chat answers that must fit a small context.
_CHAT_PY_BUILDERS = (_py_filtered_aggregate, _py_transform, _py_string, _py_numeric, _py_stats, _py_format, _py_zip, _py_lists,
                     _py_units, _py_dates)


def _render_function(f: _Func, docstring: str | None) -> str:
    if f.source is not None:
        return f.source
    lines = [f"def {f.name}({', '.join(f.params)}){f.returns}:"]
    if docstring is not None:
        lines.append(f'    """{docstring}\n    """' if "\n" in docstring else f'    """{docstring}"""')
    return "\n".join(lines + ["    " + line for line in f.body]) + "\n"


def _with_prelude(f: _Func, code: str) -> str:
    return "\n".join(f.prelude) + "\n\n\n" + code if f.prelude else code


def _example_line(f: _Func) -> str:
    """The doctest for the example, computed by running the function itself so it is always right."""
    namespace: dict = {}
    exec(_with_prelude(f, _render_function(f, f.summary)), namespace)  # our own generated code
    value = namespace[f.name](*f.example)
    call = f"{f.name}({', '.join(repr(a) for a in f.example)})"
    if value is None:  # doctest shows nothing for None, so ask the question explicitly
        return f">>> {call} is None\n    True"
    return f">>> {call}\n    {value!r}"


def python_function(g: _G, doctest: bool | None = None) -> tuple[str, str]:
    """(summary, source) of one small function (or, rarely, a class); doctest None means 'sometimes'."""
    f = g.pick(_PY_BUILDERS)(g, g.chance(0.35))
    doctest = g.chance(0.5) if doctest is None else doctest
    doc = f.summary
    if doctest and f.example is not None and f.source is None:
        doc = f"{f.summary}\n\n    {_example_line(f)}"
    return f.summary, _with_prelude(f, _render_function(f, doc))


def _python_text(g: _G) -> str:
    pieces = []
    if g.chance(0.3):
        pieces.append(f"# {g.pick(('helpers', 'utilities', 'small tools', 'functions'))} for the {g.pick(_PY_WORDS)} "
                      f"{g.pick(('inventory', 'ledger', 'market stall', 'workshop', 'survey', 'ferry timetable'))}\n")
    defined: set[str] = set()
    for _ in range(g.pick((1, 1, 2, 2, 3))):
        source = python_function(g)[1]
        names = set(_DEFINED_NAME.findall(source))
        if not names & defined:  # a second definition of a name (or table) would shadow the first
            defined |= names
            pieces.append(source)
    return "\n\n".join(pieces)


_DEFINED_NAME = re.compile(r"^(?:def |class )?(\w+)(?: = |\(|:)", re.MULTILINE)


# --------------------------------------------------------------------------------------------
# Chats
# --------------------------------------------------------------------------------------------

_SYSTEM_PROMPTS = (
    "You are a helpful assistant.", "You are a concise assistant. Keep answers short.",
    "You are a friendly assistant who knows the towns and rivers of the valley country.",
    "Answer the user's question directly.", "You are a careful assistant. Follow instructions exactly.",
    "You are a helpful assistant for a small craft shop.",
)

_LIST_CATEGORIES = (("fruits", FRUITS), ("vegetables", VEGETABLES), ("colours", COLOURS), ("birds", BIRDS),
                    ("trees", TREES), ("tools", TOOLS), ("animals", ANIMALS), ("crafts", CRAFT_NAMES),
                    ("rivers", RIVER_NAMES), ("fish", FISH))


def _chat_list(g: _G) -> tuple[str, str, Callable | None]:
    label, pool = g.pick(_LIST_CATEGORIES)
    k = g.num(2, 5)
    items = g.sample(pool, k)
    word = NUMBER_WORDS[k]
    prompt = g.pick((f"List {word} {label} as bullets.", f"Give me a bulleted list of {word} {label}.",
                     f"Name {word} {label}, one per line, each starting with '- '.", f"Write {word} {label} as a bullet list."))

    def follow(g2: _G) -> tuple[str, str]:
        extra = g2.pick([x for x in pool if x not in items])
        return g2.pick(("Add one more.", "Now add one more item.")), "\n".join(f"- {x}" for x in items + [extra])

    return prompt, "\n".join(f"- {x}" for x in items), follow


def _chat_math(g: _G) -> tuple[str, str, Callable | None]:
    if g.chance(0.8):
        op, a, b = g.pick(SFT_SUMS)
        a, b = (a, b) if g.chance(0.5) else (b, a)
        value = _table_value(op, a, b)
        prompt = g.pick((f"What is {a} {op} {b}?", f"Compute {a} {op} {b}.", f"{a} {op} {b} = ?"))
        # The number alone, as the pretraining quizzes answer: restating "a op b" would ask the
        # demo's small model to copy the operands, which it does unreliably (README, "A demo that learns").
        return prompt, str(value), None
    op = g.pick("+-*/")
    a, b = g.num(2, 99), g.num(2, 99)
    if op in "*/":
        a, b = (a, g.num(2, 12)) if op == "*" else (g.num(10, 200), g.num(2, 12))
    if op == "-" and b > a:
        a, b = b, a
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
    if op == "/":
        prompt = g.pick((f"What is {a} divided by {b}, with remainder?", f"Divide {a} by {b}. Give the quotient and remainder."))
        return prompt, f"{a} / {b} = {a // b} remainder {a % b}", None
    prompt = g.pick((f"What is {a} {op} {b}?", f"Compute {a} {op} {b}.", f"{a} {op} {b} = ?",
                     f"Calculate {a} {op} {b}. Answer with the number only."))
    answer = str(value) if "number only" in prompt or g.chance(0.5) else f"{a} {op} {b} = {value}"

    def follow(g2: _G) -> tuple[str, str]:
        k = g2.num(2, 9)
        if g2.chance(0.5):
            return f"Now multiply that by {k}.", f"{value} * {k} = {value * k}"
        return f"And add {k} to that?", f"{value} + {k} = {value + k}"

    return prompt, answer, follow


def _chat_word_problem(g: _G) -> tuple[str, str, Callable | None]:
    problem, solution, answer = arithmetic_problem(g, max_steps=2)
    return problem, f"{solution}\nThe answer is {answer}.", None


def _chat_python(g: _G) -> tuple[str, str, Callable | None]:
    f = g.pick(_CHAT_PY_BUILDERS)(g, g.chance(0.2))
    summary = f.summary[0].lower() + f.summary[1:].rstrip(".")
    prompt = g.pick((f"Write a Python function that will {summary}.", f"Write a Python function named {f.name} to {summary}.",
                     f"In Python: {summary}."))
    code = _render_function(f, None).rstrip("\n")
    return prompt, f"```python\n{code}\n```", None


def _chat_exact(g: _G) -> tuple[str, str, Callable | None]:
    target = g.pick(("OK", "Yes", "Done", "Ready", g.pick(ANIMALS), g.pick(COLOURS), g.pick(g.w.towns).name,
                     f"{g.pick(ADJECTIVES)} {g.pick(OBJECTS)}", str(g.num(1, 999))))
    prompt = g.pick((f"Reply with exactly: {target}", f"Say only this: {target}",
                     f"Respond with the single phrase \"{target}\" and nothing else.",
                     f"Repeat after me: {target}"))
    return prompt, target, None


def _town_options(town: Town, fact: Town) -> tuple[tuple[str, str, str], ...]:
    """(question, long answer, short answer) about `town`, the answers filled with `fact`'s values:
    the town's own for a right answer, another town's for a well-formed wrong one."""
    name = town.name
    return (
        (f"Which river flows through {name}?", f"{name} lies on the River {fact.river}.", f"The River {fact.river}."),
        (f"What river is {name} on?", f"The River {fact.river}.", f"The {fact.river}."),
        (f"When was {name} founded?", f"{name} was founded in {fact.founded}.", f"In {fact.founded}."),
        (f"Who founded {name}?", f"{name} was founded by {fact.founder}.", f"{fact.founder}."),
        (f"What is {name} known for?", f"{name} is known for its {fact.craft[0]}.", f"Its {fact.craft[0]}."),
        (f"What do the {_plural(town.craft[1])} of {name} make?", f"They make {_join(list(fact.craft[3]))}.",
         f"{_join(list(fact.craft[3])).capitalize()}."),
        (f"On which day is the market in {name}?", f"The market in {name} is held every {fact.market_day}.",
         f"On {fact.market_day}s."),
        (f"When is the {town.festival} in {name}?", f"The {town.festival} takes place every {fact.festival_month}.",
         f"In {fact.festival_month}."),
        (f"How far is {name} from {town.neighbour}?", f"{name} is {fact.distance} miles from {town.neighbour}.",
         f"{fact.distance} miles."),
        (f"Which region is {name} in?", f"{name} is in {fact.region}.", f"In {fact.region}."),
        (f"What is the local dish of {name}?", f"The local dish of {name} is {fact.dish}.", f"{fact.dish.capitalize()}."),
        (f"About how many people live in {name}?", f"About {fact.population:,} people live in {name}.",
         f"About {fact.population:,}."),
    )


def _town_qa(g: _G, town: Town) -> tuple[str, str]:
    """A question about a town and its answer, as a sentence that restates the town or as the
    short answer alone (which a small model can give from the question without copying it)."""
    question, long, short = g.pick(_town_options(town, town))
    return question, short if g.chance(0.5) else long


def _person_options(person: Person, fact: Person) -> tuple[tuple[str, str, str], ...]:
    """(question, long answer, short answer) about `person`, the answers filled with `fact`'s values
    (as _town_options). "Who was X?" has no short answer: in v11 its short form ("A fisher from
    Marrowhaven, best known for ...") became the SFT model's answer to "Who founded Marrowhaven?"
    for three of seed 42's four held-out founders, which its base named (README, ninth round)."""
    name, trade = person.name, _article(fact.trade)
    who = f"{name} was {trade} from {fact.town}, best known for {fact.work}."
    return ((f"Who was {name}?", who, who),
            (f"Where was {name} from?", f"{name} was from {fact.town}.", f"From {fact.town}."),
            (f"When was {name} born?", f"{name} was born in {fact.born}.", f"In {fact.born}."))


def _person_qa(g: _G, person: Person) -> tuple[str, str]:
    """A question about a person and its answer, long or short (as _town_qa)."""
    question, long, short = g.pick(_person_options(person, person))
    return question, short if g.chance(0.5) else long


def _chat_fact(g: _G) -> tuple[str, str, Callable | None]:
    if g.chance(0.2):
        person = g.pick(g.w.people)
        return _person_qa(g, person) + (None,)
    town = g.pick(g.w.towns)
    prompt, answer = _town_qa(g, town)

    def follow(g2: _G) -> tuple[str, str]:
        q, a = _town_qa(g2, town)
        return "And " + q[0].lower() + q[1:], a

    return prompt, answer, follow


def _chat_transform(g: _G) -> tuple[str, str, Callable | None]:
    kind = g.num(0, 5)
    phrase = " ".join(g.sample(ADJECTIVES + OBJECTS, g.num(2, 4)))
    if kind == 0:
        return f"Write \"{phrase}\" in capital letters.", phrase.upper(), None
    if kind == 1:
        nums = [g.num(1, 99) for _ in range(g.num(3, 6))]
        order = g.pick(("smallest to largest", "largest to smallest"))
        ordered = sorted(nums, reverse=order.startswith("largest"))
        return f"Sort these numbers from {order}: {', '.join(map(str, nums))}", ", ".join(map(str, ordered)), None
    if kind == 2:
        sentence = " ".join(g.sample(ADJECTIVES + OBJECTS + ADVERBS, g.num(3, 9)))
        return f"How many words are in this sentence: \"{sentence}\"?", str(len(sentence.split())), None
    if kind == 3:
        word = g.pick(OBJECTS + ANIMALS)
        return f"How many letters are in the word \"{word}\"?", str(len(word)), None
    if kind == 4:
        a, b = g.num(1, 99), g.num(1, 99)
        rel = g.pick(("greater than", "less than"))
        truth = a > b if rel == "greater than" else a < b
        return f"Is {a} {rel} {b}? Answer yes or no.", "Yes." if truth else "No.", None
    word, times = g.pick(ANIMALS + COLOURS), g.num(2, 4)
    return f"Repeat the word {word} {NUMBER_WORDS[times]} times.", " ".join([word] * times), None


def _chat_smalltalk(g: _G) -> tuple[str, str, Callable | None]:
    return g.pick((("Hello!", "Hello! How can I help you today?"), ("Hi there.", "Hi! What can I do for you?"),
                   ("Thank you!", "You're welcome!"), ("Thanks, that helps.", "Glad to help!"),
                   ("Good morning!", "Good morning! How can I help?"))) + (None,)


# Single-digit sums are the most frequent kind (0.28 x 0.8 of the turns): the tiny model computes them
# in the quiz form it drills thousands of times, and answers them in the chat form only after hundreds
# of chat examples (held-out sums answered after SFT: 0.03 at 0.16 x 0.6, 0.22 at 0.28 x 0.8).
_CHAT_KINDS = ((_chat_list, 0.10), (_chat_math, 0.28), (_chat_word_problem, 0.07), (_chat_python, 0.09), (_chat_exact, 0.09),
               (_chat_fact, 0.24), (_chat_transform, 0.10), (_chat_smalltalk, 0.03))


def _weighted(g: _G, table: tuple[tuple, ...]):
    x = g.r.random()
    for item, weight in table:
        if x < weight:
            return item
        x -= weight
    return table[-1][0]


def _chat_turn(g: _G) -> tuple[str, str, Callable | None]:
    return _weighted(g, _CHAT_KINDS)(g)


def _chat_messages(g: _G) -> list[dict[str, str]]:
    while True:  # drawn again from the same stream, so record i still depends on (seed, i) alone
        messages = _draw_chat(g)
        if not any(leaks_heldout(m["content"]) for m in messages):
            return messages


def _draw_chat(g: _G) -> list[dict[str, str]]:
    messages = []
    if g.chance(0.3):
        messages.append({"role": "system", "content": g.pick(_SYSTEM_PROMPTS)})
    exchanges = g.pick((1, 1, 2, 2, 3))
    follow = None
    for _ in range(exchanges):
        if follow is not None and g.chance(0.6):
            prompt, answer = follow(g)
            follow = None
        else:
            prompt, answer, follow = _chat_turn(g)
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return messages


# --------------------------------------------------------------------------------------------
# Preference pairs: the chats' prompts, a right answer and one the aligned model should avoid
# --------------------------------------------------------------------------------------------

REJECTED_KINDS = ("wrong", "rambling", "unformatted")
# User turn + answer fit the preference stage's 128-token sequences. The tokenizer is trained
# later, so a rambling answer is cut by a pessimistic estimate (rough_tokens) with room for the
# chat template's tokens, and to a few hundred characters at most.
PREFERENCE_MAX_TOKENS = 128
_TEMPLATE_TOKENS = 16  # ChatML's five a message, and a margin for rough_tokens' rare underestimates
RAMBLING_MAX_CHARS = 280


def rough_tokens(text: str) -> float:
    """A pessimistic token count for the tiny recipe's 4k-entry BPE: one per digit, capital letter,
    punctuation mark and space before a digit (a small vocabulary keeps these apart), one per two
    lowercase letters (it splits the rarer words). Measured on the pairs with the recipe's tokenizer:
    about 1.6 times the true count on average, at worst some 15% under it (_TEMPLATE_TOKENS' margin)."""
    lower = sum(c.islower() for c in text)
    return lower / 2 + len(text) - lower - text.count(" ") + len(re.findall(r" (?=\d)", text))


@dataclass(frozen=True)
class _Pair:
    """A prompt with its right answer, a well-formed wrong one and, for a format instruction, an
    answer that ignores the format."""

    prompt: str
    chosen: str
    wrong: str
    unformatted: str | None = None


@lru_cache(maxsize=1)
def _sft_towns() -> tuple[Town, ...]:
    return tuple(t for t in world().towns if t.name not in heldout_towns())


@lru_cache(maxsize=1)
def _sft_people() -> tuple[Person, ...]:
    return tuple(p for p in world().people if p.name not in heldout_people())


def _apply(op: str, a: int, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {x}" for x in items)


def _pref_town_fact(g: _G) -> _Pair:
    town = g.pick(_sft_towns())
    options = _town_options(town, town)
    k, form = g.num(0, len(options) - 1), g.pick((1, 2))  # form: the long or the short answer
    question, right = options[k][0], options[k][form]
    # another town's value in the very words of the right answer: only the fact is wrong
    wrongs = [a for a in (_town_options(town, t)[k][form] for t in _sft_towns()) if a != right]
    return _Pair(question, right, g.pick(wrongs))


def _pref_person_fact(g: _G) -> _Pair:
    person = g.pick(_sft_people())
    k = g.num(0, 2)
    question, right, _ = _person_options(person, person)[k]
    wrongs = [a for a in (_person_options(person, p)[k][1] for p in _sft_people()) if a != right]
    return _Pair(question, right, g.pick(wrongs))


def _wrong_value(g: _G, op: str, a: int, b: int) -> int:
    value = _apply(op, a, b)
    if op == "*" and a + b != value and g.chance(0.3):
        return a + b  # added instead of multiplied, the mistake a small model makes
    off = g.pick((1, 2, 3, 10)) * g.pick((-1, 1))
    return value + off if value + off >= 0 else value - off


def _pref_arithmetic(g: _G, number_only: bool = False) -> _Pair:
    if g.chance(0.4):
        op, a, b = g.pick(SFT_SUMS)
        a, b = (a, b) if g.chance(0.5) else (b, a)
    else:
        op = g.pick("+-*")
        a, b = g.num(2, 99), g.num(2, 12 if op == "*" else 99)
        a, b = (b, a) if op == "-" and b > a else (a, b)
    value, wrong = _apply(op, a, b), _wrong_value(g, op, a, b)
    if number_only:
        unformatted = g.pick((f"{a} {op} {b} = {value}", f"The answer is {value}.", f"{a} {op} {b} is {value}."))
        return _Pair(f"Calculate {a} {op} {b}. Answer with the number only.", str(value), str(wrong), unformatted)
    prompt = g.pick((f"What is {a} {op} {b}?", f"Compute {a} {op} {b}.", f"{a} {op} {b} = ?"))
    if g.chance(0.5):
        return _Pair(prompt, str(value), str(wrong))
    return _Pair(prompt, f"{a} {op} {b} = {value}", f"{a} {op} {b} = {wrong}")


def _pref_list(g: _G) -> _Pair:
    label, pool = g.pick(_LIST_CATEGORIES)
    k = g.num(2, 5)
    items = g.sample(pool, k + 1)  # one spare, for a list one item too long
    word = NUMBER_WORDS[k]
    prompt = g.pick((f"List {word} {label} as bullets.", f"Give me a bulleted list of {word} {label}.",
                     f"Name {word} {label}, one per line, each starting with '- '.", f"Write {word} {label} as a bullet list."))
    wrong = _bullets(items if g.chance(0.5) else items[:k - 1])
    prose = _join(items[:k])
    unformatted = g.pick((f"{prose[0].upper()}{prose[1:]}.", ", ".join(items[:k]),
                          "\n".join(f"{n}. {x}" for n, x in enumerate(items[:k], 1))))
    return _Pair(prompt, _bullets(items[:k]), wrong, unformatted)


def _pref_one_word(g: _G) -> _Pair:
    if g.chance(0.25):
        person = g.pick(_sft_people())
        question, sentence, _ = _person_options(person, person)[1]
        value, others, unformatted = person.town, [t.name for t in _sft_towns()], sentence
    else:
        town = g.pick(_sft_towns())
        k, attr = g.pick(((0, "river"), (6, "market_day"), (7, "festival_month")))
        question, long, short = _town_options(town, town)[k]
        value, others, unformatted = getattr(town, attr), [getattr(t, attr) for t in _sft_towns()], g.pick((long, short))
    prompt = g.pick((f"{question} Answer in one word.", f"In one word: {question[0].lower()}{question[1:]}"))
    return _Pair(prompt, f"{value}.", f"{g.pick([v for v in others if v != value])}.", unformatted)


def _pref_yes_no(g: _G) -> _Pair:
    a, b = g.num(1, 99), g.num(1, 99)
    rel = g.pick(("greater than", "less than"))
    truth = a > b if rel == "greater than" else a < b
    right, wrong = ("Yes.", "No.") if truth else ("No.", "Yes.")
    unformatted = f"{right[:-1]}, {a} is {'' if truth else 'not '}{rel} {b}."
    return _Pair(f"Is {a} {rel} {b}? Answer yes or no.", right, wrong, unformatted)


def _exact_target(g: _G) -> str:
    return g.pick(("OK", "Yes", "Done", "Ready", g.pick(ANIMALS), g.pick(COLOURS), g.pick(_sft_towns()).name,
                   f"{g.pick(ADJECTIVES)} {g.pick(OBJECTS)}", str(g.num(1, 999))))


def _pref_exact(g: _G) -> _Pair:
    target = _exact_target(g)
    prompt = g.pick((f"Reply with exactly: {target}", f"Say only this: {target}",
                     f"Respond with the single phrase \"{target}\" and nothing else.", f"Repeat after me: {target}"))
    unformatted = g.pick((f"Sure! {target}", f"{target}. Anything else?", f"Okay, here it is: {target}"))
    return _Pair(prompt, target, _exact_target(g), unformatted)


def _pref_capitals(g: _G) -> _Pair:
    words = g.sample(ADJECTIVES + OBJECTS, g.num(2, 4))
    phrase = " ".join(words)
    swapped = [g.pick(OBJECTS) if i == len(words) - 1 else w for i, w in enumerate(words)]  # the last word changed
    unformatted = g.pick((phrase, phrase.title(), f"Here it is: {phrase.upper()}"))
    return _Pair(f"Write \"{phrase}\" in capital letters.", phrase.upper(), " ".join(swapped).upper(), unformatted)


def _pref_repeat(g: _G) -> _Pair:
    word, times = g.pick(ANIMALS + COLOURS), g.num(2, 4)
    unformatted = g.pick((", ".join([word] * times), "\n".join([f"- {word}"] * times), f"{word.capitalize()}! " * times))
    return _Pair(f"Repeat the word {word} {NUMBER_WORDS[times]} times.", " ".join([word] * times),
                 " ".join([word] * (times + g.pick((-1, 1)))), unformatted.strip())


def _pref_number_only(g: _G) -> _Pair:
    return _pref_arithmetic(g, number_only=True)


_PREF_FORMATS = ((_pref_list, 0.3), (_pref_one_word, 0.2), (_pref_yes_no, 0.1), (_pref_exact, 0.1), (_pref_capitals, 0.1),
                 (_pref_number_only, 0.1), (_pref_repeat, 0.1))


def _pref_format(g: _G) -> _Pair:
    return _weighted(g, _PREF_FORMATS)(g)


# Prompts for the wrong and rambling kinds; the unformatted kind draws format instructions alone.
_PREF_PROMPTS = ((_pref_town_fact, 0.4), (_pref_person_fact, 0.1), (_pref_arithmetic, 0.4), (_pref_format, 0.1))


def _drift(g: _G) -> str:
    if g.chance(0.3):
        op, a, b = g.pick(SFT_SUMS)
        return f"{a} {op} {b} = {_apply(op, a, b)}."
    if g.chance(0.2):
        person = g.pick(_sft_people())
        return g.pick(_person_options(person, person))[1]
    town = g.pick(_sft_towns())
    # only sentences that name their town: "They make ropes." would not read as another fact
    return g.pick([long for _, long, _ in _town_options(town, town) if town.name in long])


def _next_question(g: _G) -> str:
    pair = _pref_town_fact(g) if g.chance(0.5) else _pref_arithmetic(g)
    return f"Q: {pair.prompt}\nA: {pair.chosen}"


def _cut(text: str, tokens: float) -> str:
    """The longest whole-word prefix of `text` within `tokens` (rough_tokens) and RAMBLING_MAX_CHARS."""
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    return text[:max((e for e in ends if e <= RAMBLING_MAX_CHARS and rough_tokens(text[:e]) <= tokens), default=ends[0])]


def _ramble(g: _G, prompt: str, answer: str) -> str:
    """`answer`, then text past where the turn should end: the answer again, other facts, or a
    made-up next question and answer, cut off mid-way as a model that never stops would be."""
    sep = "\n" if "\n" in answer or answer[-1] not in ".!?" else " "
    style = g.pick(("repeat", "drift", "next"))
    room = PREFERENCE_MAX_TOKENS - _TEMPLATE_TOKENS - rough_tokens(prompt)
    if style == "repeat":
        return _cut(sep.join([answer] * g.num(3, 6)), room)
    more = _drift if style == "drift" else _next_question
    limit = g.num(int(min(rough_tokens(answer) + 25, room)), int(room))
    text = answer
    while rough_tokens(text) <= limit and len(text) <= RAMBLING_MAX_CHARS:
        text += ("\n" if style == "next" else sep) + more(g)
    return _cut(text, limit)


def _draw_preference(g: _G, kind: str) -> tuple[str, str, str]:
    if kind == "unformatted":
        pair = _pref_format(g)
        return pair.prompt, pair.chosen, pair.unformatted
    pair = _weighted(g, _PREF_PROMPTS)(g)
    if kind == "wrong":
        return pair.prompt, pair.chosen, pair.wrong
    return pair.prompt, pair.chosen, _ramble(g, pair.prompt, pair.chosen if g.chance(0.7) else pair.wrong)


def _preference_record(rid: str, g: _G) -> dict:
    kind = g.pick(REJECTED_KINDS)  # before any redraw, so the kinds stay evenly mixed
    while True:  # drawn again from the same stream, as the chats are
        prompt, chosen, rejected = _draw_preference(g, kind)
        if chosen != rejected and not any(leaks_heldout(text) for text in (prompt, chosen, rejected)):
            break
    return {"id": rid, "prompt": prompt,
            "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
            "rejected": [{"role": "user", "content": prompt}, {"role": "assistant", "content": rejected}],
            "rejected_kind": kind}


# --------------------------------------------------------------------------------------------
# The world-knowledge suite: questions about held-out facts (smolrecipe.eval.qa reads the file)
# --------------------------------------------------------------------------------------------

def _choices(rng: random.Random, gold: str, pool: list[str], k: int = 4) -> tuple[list[str], int]:
    options = [gold] + rng.sample(sorted(set(pool) - {gold}), k - 1)
    rng.shuffle(options)
    return options, options.index(gold)


def _wrong(gold: str, pool: list[str]) -> list[str]:
    # a value inside the gold one ("weaving" in "basket weaving") would fail a right answer
    return sorted({v for v in pool if v != gold and v.lower() not in gold.lower()})


def _fact_items(rng: random.Random) -> list[dict]:
    w = world()
    towns = [t for t in w.towns if t.name in heldout_towns()]
    pools = {"river": [t.river for t in w.towns], "region": [t.region[4:] for t in w.towns],
             "market": [t.market_day for t in w.towns], "festival": [t.festival_month for t in w.towns],
             "craft": [t.craft[0] for t in w.towns], "dish": [t.dish for t in w.towns], "founder": [t.founder for t in w.towns],
             "home": [t.name for t in w.towns]}
    items = []
    for t in towns:  # each cloze is a phrasing the prose uses; each question one the SFT chats use for other towns
        for attr, question, cloze, gold in (
                ("river", f"Which river flows through {t.name}?", f"{t.name} lies on the River", t.river),
                ("region", f"Which region is {t.name} in?", f"{t.name} is a town in the", t.region[4:]),
                ("market", f"On which day is the market in {t.name}?", f"The market in {t.name} is held every", t.market_day),
                ("festival", f"When is the {t.festival} in {t.name}?", f"The {t.festival} takes place in {t.name} every",
                 t.festival_month),
                ("craft", f"What is {t.name} known for?", f"{t.name} is known for its", t.craft[0]),
                ("dish", f"What is the local dish of {t.name}?", f"Visitors to {t.name} are told to try the", t.dish),
                ("founder", f"Who founded {t.name}?", f"{t.name} was founded in {t.founded} by", t.founder)):
            items.append((f"{attr}-{t.name}", question, cloze, gold, pools[attr]))
    for person in (p for p in w.people if p.name in heldout_people()):
        items.append((f"home-{person.name}", f"Where was {person.name} from?", f"{person.name} was born in {person.born} in",
                      person.town, pools["home"]))
    out = []
    for key, question, cloze, gold, pool in items:
        choices, index = _choices(rng, gold, pool)
        item = {"id": f"fact-{key.replace(' ', '_')}", "category": "fact", "question": question, "answer": gold,
                "match": "phrase", "wrong": _wrong(gold, pool), "cloze": cloze, "choices": choices, "gold": index}
        if key.startswith("market-"):  # the chats and pages answer "On Saturdays.": the weekly day, said in the plural
            item["also"], item["wrong"] = [f"{gold}s"], item["wrong"] + [f"{day}s" for day in item["wrong"]]
        out.append(item)
    return out


def _arithmetic_items(rng: random.Random) -> list[dict]:
    out = []
    for op, a, b in sorted(HELDOUT_SUMS):
        a, b = (a, b) if rng.random() < 0.5 else (b, a)
        value = _table_value(op, a, b)
        near = [str(v) for v in range(max(0, value - 3), value + 4) if v != value]
        choices, index = _choices(rng, str(value), near)
        out.append({"id": f"arithmetic-{a}{'plus' if op == '+' else 'times'}{b}", "category": "arithmetic",
                    "question": f"What is {a} {op} {b}?", "answer": str(value), "match": "number",
                    "cloze": f"{a} {op} {b} =", "choices": choices, "gold": index})
    return out


def _format_items(rng: random.Random, n: int = 24) -> list[dict]:
    out = []
    for i in range(n):
        g = _G(random.Random(f"{WORLD_SEED}/format/{i}"))
        kind = i % 3
        if kind == 0:
            prompt, answer, _ = _chat_list(g)
            check = {"kind": "bullet_count", "n": len(answer.splitlines())}
        elif kind == 1:
            prompt, answer, _ = _chat_exact(g)
            check = {"kind": "exact_output", "text": answer}
        else:
            phrase = " ".join(g.sample(ADJECTIVES + OBJECTS, g.num(2, 3)))
            prompt, check = f"Write \"{phrase}\" in capital letters.", {"kind": "exact_output", "text": phrase.upper()}
        out.append({"id": f"format-{i:02d}", "category": "format", "question": prompt, "match": "check", "check": check})
    return out


def world_qa_items() -> list[dict]:
    """The world-knowledge suite: every held-out fact, held-out single-digit sums and products, and
    format instructions; fixed by WORLD_SEED (the same for every corpus seed)."""
    rng = random.Random(f"{WORLD_SEED}/world-qa")
    return _fact_items(rng) + _arithmetic_items(rng) + _format_items(rng)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def _rng(source: str, seed: int, i: int) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so it is stable across runs and platforms.
    return random.Random(f"smolrecipe-corpus/{source}/{seed}/{i}")


_TEXT_GENERATORS: dict[str, Callable[[_G], str]] = {
    "forum": _forum_text, "arithmetic": _arithmetic_text, "python_functions": _python_text,
}


def _record(source: str, seed: int, i: int) -> dict:
    rid = f"{source}-{i}"
    if source == "chats":
        return {"id": rid, "messages": _chat_messages(_G(_rng(source, seed, i)))}
    if source == "preferences":
        return _preference_record(rid, _G(_rng(source, seed, i)))
    if source == "prose":
        return {"id": rid, "text": _prose_document(seed, i)}
    return {"id": rid, "text": _TEXT_GENERATORS[source](_G(_rng(source, seed, i)))}


def generate_records(source: str, n: int, seed: int) -> Iterator[dict]:
    """Records 0..n-1 of a source; record i depends only on (source, seed, i)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    for i in range(n):
        yield _record(source, seed, i)


def record_characters(record: dict) -> int:
    """Characters of content: the text, the sum over a chat's messages, or a preference pair's
    prompt and its two answers."""
    if "chosen" in record:
        return len(record["prompt"]) + len(record["chosen"][-1]["content"]) + len(record["rejected"][-1]["content"])
    if "messages" in record:
        return sum(len(m["content"]) for m in record["messages"])
    return len(record["text"])


def documents_for(source: str, scale: float, shards: int) -> int:
    return max(shards, int(round(DEFAULT_DOCUMENTS[source] * scale)))


def _write_source(folder: Path, source: str, n: int, seed: int, shards: int) -> dict:
    folder.mkdir(parents=True)
    characters = 0
    records = generate_records(source, n, seed)
    for shard in range(shards):
        # Contiguous slices: shard k holds records [k*n//shards, (k+1)*n//shards), in order.
        count = (shard + 1) * n // shards - shard * n // shards
        with open(folder / f"{shard:05d}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for _ in range(count):
                record = next(records)
                characters += record_characters(record)
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {"documents": n, "characters": characters, "files": shards}


def _manifest_params(seed: int, scale: float, shards: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "seed": seed, "scale": scale, "shards": shards}


def _existing_counts(out: Path, params: dict) -> dict[str, dict] | None:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("params") != params:
        return None
    counts = manifest.get("sources", {})
    complete = set(counts) == set(SOURCES) and all(
        len(list((out / s).glob("*.jsonl"))) == counts[s]["files"] for s in SOURCES)
    return counts if complete else None


def write_demo_corpus(out: str | Path, seed: int = 0, scale: float = 1.0, shards: int = 2) -> dict[str, dict]:
    """Write every source under `out` atomically; return {source: {documents, characters, files}}.

    Everything is written into a temporary sibling folder and renamed into place, so `out` is
    either absent, the previous corpus, or the complete new one. A corpus already at `out` made
    with the same (seed, scale, shards, generator version) is kept as it is.
    """
    if shards < 1 or scale <= 0 or not math.isfinite(scale):
        raise ValueError(f"need shards >= 1 and a positive scale, got shards={shards}, scale={scale}")
    out = Path(out)
    params = _manifest_params(seed, scale, shards)
    cached = _existing_counts(out, params)
    if cached is not None:
        # The items depend on this code alone, not on the sources: a scoring fix reaches a kept corpus.
        qa_path, items = out / QA_FILE, _world_qa_text(world_qa_items())
        if not qa_path.is_file() or qa_path.read_text() != items:
            write_file(qa_path, items)
        return cached
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        # Never replace a folder we did not write: it could be the user's data.
        raise FileExistsError(f"{out} exists, is not empty and holds no {MANIFEST}; choose another folder or remove it")
    with staged_folder(out) as staging:
        counts = {source: _write_source(staging / source, source, documents_for(source, scale, shards), seed, shards)
                  for source in SOURCES}
        items = world_qa_items()
        (staging / QA_FILE).write_text(_world_qa_text(items))
        (staging / MANIFEST).write_text(json.dumps({"params": params, "sources": counts, "world_qa": len(items)}, indent=2) + "\n")
    return counts


def _world_qa_text(items: list[dict]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
