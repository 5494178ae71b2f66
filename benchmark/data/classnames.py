"""Class names of the real datasets, in label order, as the zero-shot heads read them.

Why names and not folder names: a CLIP head is only as good as the words it encodes, so the
harness uses the names CLIP's authors chose for their zero-shot evaluation (OpenAI CLIP's
``data/prompts.md``), which the task-vector line of work (task vectors, TIES, TALL masks, TSV,
Iso-C, Weight Weaving) inherited: e.g. GTSRB's signs are described, not numbered, and EuroSAT's
classes are spelled as land uses. Label order is the dataset's own (torchvision's, or the sorted
class folders of the papers' ImageFolder layouts), written next to each list.

Four long lists are *not* typed in here, because a single wrong string would silently shift a
head: Stanford Cars (196, read from ``devkit/cars_meta.mat``), SUN397 (397, from ``ClassName.txt``
or the prepared folder names), DomainNet (345, from its official split lists) and OfficeHome (65,
from its class folders). ImageNet-R's 200 names come from the packages the harness already
depends on (see :func:`imagenet_r`), not from a copy.
"""

from __future__ import annotations

from functools import lru_cache

DIGITS = tuple(str(i) for i in range(10))

# MNIST, SVHN and EMNIST (split "digits"): CLIP reads digits as numerals in quotes.
MNIST = SVHN = EMNIST = DIGITS

# Sorted class folders of dtd/images (47 describable textures).
DTD = (
    "banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked",
    "crosshatched", "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy",
    "grid", "grooved", "honeycombed", "interlaced", "knitted", "lacelike", "lined", "marbled",
    "matted", "meshed", "paisley", "perforated", "pitted", "pleated", "polka-dotted", "porous",
    "potholed", "scaly", "smeared", "spiralled", "sprinkled", "stained", "stratified", "striped",
    "studded", "swirly", "veined", "waffled", "woven", "wrinkled", "zigzagged",
)

# EuroSAT: sorted class folders, and the land-use names CLIP uses for them.
EUROSAT_FOLDERS = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
)
EUROSAT = (
    "annual crop land", "forest", "brushland or shrubland", "highway or road",
    "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
    "residential buildings or homes or apartments", "river", "lake or sea",
)

# NWPU-RESISC45: sorted class folders; names are the folders with spaces.
RESISC45_FOLDERS = (
    "airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge", "chaparral",
    "church", "circular_farmland", "cloud", "commercial_area", "dense_residential", "desert",
    "forest", "freeway", "golf_course", "ground_track_field", "harbor", "industrial_area",
    "intersection", "island", "lake", "meadow", "medium_residential", "mobile_home_park",
    "mountain", "overpass", "palace", "parking_lot", "railway", "railway_station",
    "rectangular_farmland", "river", "roundabout", "runway", "sea_ice", "ship", "snowberg",
    "sparse_residential", "stadium", "storage_tank", "tennis_court", "terrace",
    "thermal_power_station", "wetland",
)
RESISC45 = tuple(f.replace("_", " ") for f in RESISC45_FOLDERS)

# GTSRB class ids 0..42, described as CLIP describes them.
GTSRB = (
    "red and white circle 20 kph speed limit",
    "red and white circle 30 kph speed limit",
    "red and white circle 50 kph speed limit",
    "red and white circle 60 kph speed limit",
    "red and white circle 70 kph speed limit",
    "red and white circle 80 kph speed limit",
    "end / de-restriction of 80 kph speed limit",
    "red and white circle 100 kph speed limit",
    "red and white circle 120 kph speed limit",
    "red and white circle red car and black car no passing",
    "red and white circle red truck and black car no passing",
    "red and white triangle road intersection warning",
    "white and yellow diamond priority road",
    "red and white upside down triangle yield right-of-way",
    "stop",
    "empty red and white circle",
    "red and white circle no truck entry",
    "red circle with white horizonal stripe no entry",
    "red and white triangle with exclamation mark warning",
    "red and white triangle with black left curve approaching warning",
    "red and white triangle with black right curve approaching warning",
    "red and white triangle with black double curve approaching warning",
    "red and white triangle rough / bumpy road warning",
    "red and white triangle car skidding / slipping warning",
    "red and white triangle with merging / narrow lanes warning",
    "red and white triangle with person digging / construction / road work warning",
    "red and white triangle with traffic light approaching warning",
    "red and white triangle with person walking warning",
    "red and white triangle with child and person walking warning",
    "red and white triangle with bicyle warning",
    "red and white triangle with snowflake / ice warning",
    "red and white triangle with deer warning",
    "white circle with gray strike bar no speed limit",
    "blue circle with white right turn arrow mandatory",
    "blue circle with white left turn arrow mandatory",
    "blue circle with white forward arrow mandatory",
    "blue circle with white forward or right turn arrow mandatory",
    "blue circle with white forward or left turn arrow mandatory",
    "blue circle with white keep right arrow mandatory",
    "blue circle with white keep left arrow mandatory",
    "blue circle with white arrows indicating a traffic circle",
    "white circle with gray strike bar indicating no passing for cars has ended",
    "white circle with gray strike bar indicating no passing for trucks has ended",
)

# Oxford 102 Flowers, labels 1..102 of imagelabels.mat in order.
FLOWERS102 = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon",
    "colt's foot", "king protea", "spear thistle", "yellow iris", "globe flower", "purple coneflower",
    "peruvian lily", "balloon flower", "giant white arum lily", "fire lily", "pincushion flower",
    "fritillary", "red ginger", "grape hyacinth", "corn poppy", "prince of wales feathers",
    "stemless gentian", "artichoke", "sweet william", "carnation", "garden phlox", "love in the mist",
    "mexican aster", "alpine sea holly", "ruby-lipped cattleya", "cape flower", "great masterwort",
    "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia",
    "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion",
    "petunia", "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura",
    "geranium", "orange dahlia", "pink and yellow dahlia", "cautleya spicata", "japanese anemone",
    "black-eyed susan", "silverbush", "californian poppy", "osteospermum", "spring crocus",
    "bearded iris", "windflower", "tree poppy", "gazania", "azalea", "water lily", "rose",
    "thorn apple", "morning glory", "passion flower", "lotus", "toad lily", "anthurium",
    "frangipani", "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia",
    "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "air plant", "foxglove",
    "bougainvillea", "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower",
    "trumpet creeper", "blackberry lily",
)

# PatchCamelyon: 0 = normal tissue, 1 = metastatic.
PCAM = ("lymph node", "lymph node containing metastatic tumor tissue")

# FER2013 labels 0..6 (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral).
FER2013 = ("angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral")

# Oxford-IIIT Pet labels 1..37 (breeds sorted case-insensitively, as in annotations/list.txt).
OXFORD_PETS = (
    "Abyssinian", "American Bulldog", "American Pit Bull Terrier", "Basset Hound", "Beagle", "Bengal",
    "Birman", "Bombay", "Boxer", "British Shorthair", "Chihuahua", "Egyptian Mau",
    "English Cocker Spaniel", "English Setter", "German Shorthaired", "Great Pyrenees", "Havanese",
    "Japanese Chin", "Keeshond", "Leonberger", "Maine Coon", "Miniature Pinscher", "Newfoundland",
    "Persian", "Pomeranian", "Pug", "Ragdoll", "Russian Blue", "Saint Bernard", "Samoyed",
    "Scottish Terrier", "Shiba Inu", "Siamese", "Sphynx", "Staffordshire Bull Terrier",
    "Wheaten Terrier", "Yorkshire Terrier",
)

# STL-10 labels 0..9 (class_names.txt).
STL10 = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")

# CIFAR-10 labels 0..9 (batches.meta).
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# CIFAR-100 fine labels 0..99 (meta's fine_label_names, alphabetical), with spaces for underscores.
CIFAR100 = (
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple tree", "motorcycle", "mountain", "mouse", "mushroom", "oak tree", "orange", "orchid",
    "otter", "palm tree", "pear", "pickup truck", "pine tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow tree", "wolf", "woman", "worm",
)

# Food-101 labels 0..100 (meta/classes.txt, alphabetical), with spaces for underscores.
FOOD101 = (
    "apple pie", "baby back ribs", "baklava", "beef carpaccio", "beef tartare", "beet salad",
    "beignets", "bibimbap", "bread pudding", "breakfast burrito", "bruschetta", "caesar salad",
    "cannoli", "caprese salad", "carrot cake", "ceviche", "cheese plate", "cheesecake",
    "chicken curry", "chicken quesadilla", "chicken wings", "chocolate cake", "chocolate mousse",
    "churros", "clam chowder", "club sandwich", "crab cakes", "creme brulee", "croque madame",
    "cup cakes", "deviled eggs", "donuts", "dumplings", "edamame", "eggs benedict", "escargots",
    "falafel", "filet mignon", "fish and chips", "foie gras", "french fries", "french onion soup",
    "french toast", "fried calamari", "fried rice", "frozen yogurt", "garlic bread", "gnocchi",
    "greek salad", "grilled cheese sandwich", "grilled salmon", "guacamole", "gyoza", "hamburger",
    "hot and sour soup", "hot dog", "huevos rancheros", "hummus", "ice cream", "lasagna",
    "lobster bisque", "lobster roll sandwich", "macaroni and cheese", "macarons", "miso soup",
    "mussels", "nachos", "omelette", "onion rings", "oysters", "pad thai", "paella", "pancakes",
    "panna cotta", "peking duck", "pho", "pizza", "pork chop", "poutine", "prime rib",
    "pulled pork sandwich", "ramen", "ravioli", "red velvet cake", "risotto", "samosa", "sashimi",
    "scallops", "seaweed salad", "shrimp and grits", "spaghetti bolognese", "spaghetti carbonara",
    "spring rolls", "steak", "strawberry shortcake", "sushi", "tacos", "takoyaki", "tiramisu",
    "tuna tartare", "waffles",
)

# Fashion-MNIST labels 0..9.
FASHION_MNIST = (
    "t-shirt or top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)

# Kuzushiji-MNIST labels 0..9: the romanised hiragana torchvision lists.
KMNIST = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")

# Rendered SST-2 labels 0..1 (sorted class folders).
RENDERED_SST2 = ("negative", "positive")

# PACS: sorted class folders (the same in every domain) and its four domains.
PACS = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")

OFFICE_HOME_DOMAINS = ("Art", "Clipart", "Product", "Real_World")

DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")

# ImageNet-R's renditions, the prefix of every file name (``cartoon_12.jpg``).
IMAGENET_R_RENDITIONS = (
    "art", "cartoon", "deviantart", "embroidery", "graffiti", "graphic", "misc", "origami",
    "painting", "sculpture", "sketch", "sticker", "tattoo", "toy", "videogame",
)


def imagenet_r_wnids() -> tuple[str, ...]:
    return imagenet_r()[0]


def imagenet_r_names() -> tuple[str, ...]:
    return imagenet_r()[1]


@lru_cache(maxsize=1)
def imagenet_r() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """ImageNet-R's 200 WordNet ids (its class folders, sorted) and their CLIP class names.

    ImageNet-R is a 200-class subset of ImageNet-1k. timm (a dependency of open_clip) ships the
    subset as data files — the synsets and their indices into ImageNet-1k — and open_clip ships
    CLIP's 1000 ImageNet class names, so the names follow from two installed packages.
    """
    from importlib.resources import files

    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    info = files("timm.data") / "_info"
    wnids = tuple(line.strip() for line in (info / "imagenet_r_synsets.txt").read_text().splitlines() if line.strip())
    indices = [int(line) for line in (info / "imagenet_r_indices.txt").read_text().splitlines() if line.strip()]
    if len(wnids) != 200 or len(indices) != 200:  # pragma: no cover - a changed timm
        raise RuntimeError("timm's ImageNet-R metadata does not list 200 classes")
    return wnids, tuple(IMAGENET_CLASSNAMES[i] for i in indices)
