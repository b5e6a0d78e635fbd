"""German names for the COCO labels (RAYPACK `lang=de`); labels without an entry are returned as they are."""

from __future__ import annotations

COCO_DE: dict[str, str] = {
    "person": "Person", "bicycle": "Fahrrad", "car": "Auto", "motorcycle": "Motorrad", "airplane": "Flugzeug",
    "bus": "Bus", "train": "Zug", "truck": "Lastwagen", "boat": "Boot", "traffic light": "Ampel",
    "fire hydrant": "Hydrant", "stop sign": "Stoppschild", "parking meter": "Parkuhr", "bench": "Bank",
    "bird": "Vogel", "cat": "Katze", "dog": "Hund", "horse": "Pferd", "sheep": "Schaf", "cow": "Kuh",
    "elephant": "Elefant", "bear": "Bär", "zebra": "Zebra", "giraffe": "Giraffe", "backpack": "Rucksack",
    "umbrella": "Regenschirm", "handbag": "Handtasche", "tie": "Krawatte", "suitcase": "Koffer",
    "frisbee": "Frisbee", "skis": "Ski", "snowboard": "Snowboard", "sports ball": "Ball", "kite": "Drachen",
    "baseball bat": "Baseballschläger", "baseball glove": "Baseballhandschuh", "skateboard": "Skateboard",
    "surfboard": "Surfbrett", "tennis racket": "Tennisschläger", "bottle": "Flasche", "wine glass": "Weinglas",
    "cup": "Tasse", "fork": "Gabel", "knife": "Messer", "spoon": "Löffel", "bowl": "Schüssel",
    "banana": "Banane", "apple": "Apfel", "sandwich": "Sandwich", "orange": "Orange", "broccoli": "Brokkoli",
    "carrot": "Karotte", "hot dog": "Hotdog", "pizza": "Pizza", "donut": "Donut", "cake": "Kuchen",
    "chair": "Stuhl", "couch": "Sofa", "potted plant": "Topfpflanze", "bed": "Bett", "dining table": "Esstisch",
    "toilet": "Toilette", "tv": "Fernseher", "laptop": "Laptop", "mouse": "Maus", "remote": "Fernbedienung",
    "keyboard": "Tastatur", "cell phone": "Handy", "microwave": "Mikrowelle", "oven": "Backofen",
    "toaster": "Toaster", "sink": "Spüle", "refrigerator": "Kühlschrank", "book": "Buch", "clock": "Uhr",
    "vase": "Vase", "scissors": "Schere", "teddy bear": "Teddybär", "hair drier": "Föhn",
    "toothbrush": "Zahnbürste",
    # Face recognition answers "unknown" for people not in the face store.
    "unknown": "unbekannt",
}


def translate(label: str, lang: str) -> str:
    """`label` in `lang` ("en" or "de"); unknown languages and labels come back unchanged."""
    if lang.lower().startswith("de"):
        return COCO_DE.get(label, label)
    return label
