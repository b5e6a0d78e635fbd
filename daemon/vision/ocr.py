"""Licence plates (/v1/vision/alpr): find text lines, read them, keep the ones that look like plates.

Pipeline, all on one worker thread per request:
1. PP-OCRv4 DB text detector -> text-line quadrilaterals (probability map, contours, unclipped rotated boxes).
2. PP-OCRv4 CTC recogniser reads each line (general text: tells "WASHINGTON" and "2013" from a plate number).
3. Plate-like lines (3-8 letters/digits, among the tallest text in the picture) are read again by fast-plate-ocr's
   CCT model on plate-shaped crops around the line; it was trained on plates and gets O/0 and T/I right where the
   general recogniser does not, so its reading wins when it is confident.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ...accelerators.base import Session
from ..registry import LoadedTask, ModelRegistry, ModelUnavailable
from .image import decode_image
from .types import clip_box

TASK = "alpr"
DET_MODEL = "ppocr_det_v4"
REC_MODEL = "ppocr_rec_v4"
PLATE_MODEL = "plate_ocr_cct_xs"

DET_MAX_SIDE = 960
DET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
DET_STD = np.array([0.229, 0.224, 0.225], np.float32)
DET_BIN_THRESHOLD = 0.3
DET_BOX_THRESHOLD = 0.6
DET_UNCLIP = 1.6
REC_HEIGHT = 48
REC_MAX_WIDTH = 1280
PLATE_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
PLATE_PAD = "_"
PLATE_SIZE = (128, 64)  # width, height of the CCT input
# Crops around a text line that the plate reader sees: (fraction of width, fraction of height) added on each side.
# A tight line suits EU plates; US plates carry the state name above and a slogan below the number.
PLATE_MARGINS = ((0.0, 0.0), (0.1, 0.3), (0.1, 0.8), (0.2, 0.3))
PLATE_MIN_CHAR_CONFIDENCE = 0.8
MIN_PLATE_CHARS, MAX_PLATE_CHARS = 3, 8
# Plate characters are the largest text on a plate; smaller lines (stickers, badges) must reach this share of the
# tallest plate-like line.
MIN_HEIGHT_SHARE = 0.6
# onnxruntime keeps each input shape's buffers (~250 MB for two workers): released after this long unused.
IDLE_S = 600.0


@dataclass(frozen=True, slots=True)
class TextLine:
    quad: np.ndarray  # [4,2] float32, original pixels
    score: float
    text: str = ""
    confidence: float = 0.0

    @property
    def box(self) -> tuple[int, int, int, int]:
        x0, y0 = np.floor(self.quad.min(axis=0)).astype(int)
        x1, y1 = np.ceil(self.quad.max(axis=0)).astype(int)
        return int(x0), int(y0), int(x1), int(y1)

    @property
    def height(self) -> float:
        q = self.quad
        return float(min(np.linalg.norm(q[0] - q[3]), np.linalg.norm(q[1] - q[2])))


@dataclass(frozen=True, slots=True)
class Plate:
    plate: str
    confidence: float
    x_min: int
    y_min: int
    x_max: int
    y_max: int


@dataclass(slots=True)
class PlateResult:
    plates: list[Plate]
    lines: list[TextLine]
    inference_ms: float
    process_ms: float


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def onnx_metadata(path: Path) -> dict[str, str]:
    """ModelProto.metadata_props (field 14) read straight from the protobuf; the Session API does not expose it
    and the `onnx` package would be a large dependency for one string table."""
    data = path.read_bytes()
    props: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            if field == 14:
                entry, key, value, p = data[pos : pos + size], "", "", 0
                while p < len(entry):
                    t, p = _varint(entry, p)
                    n, p = _varint(entry, p)
                    text = entry[p : p + n].decode("utf-8", "replace")
                    p += n
                    if t >> 3 == 1:
                        key = text
                    elif t >> 3 == 2:
                        value = text
                props[key] = value
            pos += size
        else:
            raise ValueError(f"{path.name}: not an ONNX model (protobuf wire type {wire})")
    return props


def order_quad(pts: np.ndarray) -> np.ndarray:
    """Top-left, top-right, bottom-right, bottom-left."""
    s = pts.sum(axis=1)
    d = np.diff(pts, axis=1).reshape(-1)
    return np.array([pts[s.argmin()], pts[d.argmin()], pts[s.argmax()], pts[d.argmax()]], np.float32)


def warp_line(bgr: np.ndarray, quad: np.ndarray) -> np.ndarray:
    w = max(1, round(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[3] - quad[2]))))
    h = max(1, round(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2]))))
    m = cv2.getPerspectiveTransform(quad, np.float32([[0, 0], [w, 0], [w, h], [0, h]]))
    return cv2.warpPerspective(bgr, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def plate_like(text: str) -> str | None:
    """The plate number in a recognised line (letters and digits only), or None when the line is not one."""
    kept = [c for c in text.upper() if not c.isspace() and c not in "-·.:•"]
    plate = "".join(c for c in kept if c.isascii() and c.isalnum())
    if not MIN_PLATE_CHARS <= len(plate) <= MAX_PLATE_CHARS or len(plate) < 0.75 * len(kept):
        return None
    return plate


class PlateWorker:
    """One worker thread's sessions: text detector, text recogniser, plate reader."""

    def __init__(self, det: Session, rec: Session, plate: Session) -> None:
        self.det, self.rec, self.plate = det, rec, plate
        self.device = det.device

    def close(self) -> None:
        for s in (self.det, self.rec, self.plate):
            s.close()


class PlateReader:
    def __init__(self, loaded: LoadedTask, charset: list[str], max_pixels: int) -> None:
        self.loaded = loaded
        # CTC: index 0 is the blank; PaddleOCR appends the space character after the dictionary.
        self.charset = ["", *charset, " "]
        self.max_pixels = max_pixels

    # ---- stages --------------------------------------------------------------------------------------------

    def detect_lines(self, session: Session, bgr: np.ndarray) -> list[TextLine]:
        h, w = bgr.shape[:2]
        scale = min(1.0, DET_MAX_SIDE / max(h, w))
        nh, nw = (max(32, round(h * scale / 32) * 32), max(32, round(w * scale / 32) * 32))
        img = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        # PaddleOCR feeds OpenCV's BGR order with ImageNet statistics listed as RGB; the model was trained so.
        tensor = ((img * (1 / 255.0) - DET_MEAN) / DET_STD).transpose(2, 0, 1)[None]
        prob = session.run([np.ascontiguousarray(tensor, dtype=np.float32)])[0][0, 0]
        mask = cv2.dilate((prob > DET_BIN_THRESHOLD).astype(np.uint8), np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        lines: list[TextLine] = []
        sx, sy = w / nw, h / nh
        for contour in contours[:1000]:
            (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
            if min(rw, rh) < 3:
                continue
            x, y, bw, bh = cv2.boundingRect(contour)
            region = np.zeros((bh, bw), np.uint8)
            cv2.fillPoly(region, [contour - np.array([x, y])], 1)
            score = float(cv2.mean(prob[y : y + bh, x : x + bw], region)[0])
            if score < DET_BOX_THRESHOLD:
                continue
            # DB shrinks text regions when training; grow the box back by area * ratio / perimeter.
            grow = rw * rh * DET_UNCLIP / (2 * (rw + rh))
            quad = cv2.boxPoints(((cx, cy), (rw + 2 * grow, rh + 2 * grow), angle))
            quad[:, 0] = np.clip(quad[:, 0] * sx, 0, w - 1)
            quad[:, 1] = np.clip(quad[:, 1] * sy, 0, h - 1)
            lines.append(TextLine(order_quad(quad), score))
        return lines

    def read_line(self, session: Session, crop: np.ndarray) -> tuple[str, float]:
        h, w = crop.shape[:2]
        width = int(min(REC_MAX_WIDTH, max(REC_HEIGHT // 2, np.ceil(REC_HEIGHT * w / max(h, 1)))))
        img = cv2.resize(crop, (width, REC_HEIGHT), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        tensor = (img * (2 / 255.0) - 1.0).transpose(2, 0, 1)[None]
        probs = session.run([np.ascontiguousarray(tensor)])[0][0]
        idx = probs.argmax(axis=1)
        best = probs.max(axis=1)
        # CTC greedy decoding: drop repeats, then blanks.
        keep = (idx != 0) & np.concatenate([[True], idx[1:] != idx[:-1]])
        chars = [self.charset[i] if i < len(self.charset) else "" for i in idx[keep]]
        return "".join(chars), float(best[keep].mean()) if keep.any() else 0.0

    def read_plate(self, session: Session, bgr: np.ndarray, box: tuple[int, int, int, int]
                   ) -> tuple[str, float, float, tuple[int, int, int, int]]:
        """Best CCT reading over plate-shaped crops: (text, mean confidence, weakest character, crop box)."""
        h, w = bgr.shape[:2]
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        crops, boxes = [], []
        for mx, my in PLATE_MARGINS:
            cb = (max(0, round(x0 - mx * bw)), max(0, round(y0 - my * bh)), min(w, round(x1 + mx * bw)),
                  min(h, round(y1 + my * bh)))
            if cb[2] - cb[0] < 4 or cb[3] - cb[1] < 4:
                continue
            rgb = cv2.cvtColor(bgr[cb[1] : cb[3], cb[0] : cb[2]], cv2.COLOR_BGR2RGB)
            crops.append(cv2.resize(rgb, PLATE_SIZE, interpolation=cv2.INTER_LINEAR))
            boxes.append(cb)
        if not crops:
            return "", 0.0, 0.0, box
        probs = session.run([np.stack(crops)])[0]  # [N, slots, alphabet]
        best: tuple[str, float, float, tuple[int, int, int, int]] = ("", 0.0, 0.0, box)
        for p, cb in zip(probs, boxes, strict=True):
            idx = p.argmax(axis=1)
            conf = p.max(axis=1)
            text = "".join(PLATE_ALPHABET[i] for i in idx)
            chars = np.array([c != PLATE_PAD for c in text])
            if not chars.any():
                continue
            weakest = float(conf.min())
            if weakest > best[2]:
                best = (text.replace(PLATE_PAD, ""), float(conf[chars].mean()), weakest, cb)
        return best

    # ---- the whole pipeline ----------------------------------------------------------------------------------

    def _run(self, worker: PlateWorker, image: bytes | np.ndarray) -> PlateResult:
        t0 = time.perf_counter()
        bgr = decode_image(image, self.max_pixels) if isinstance(image, bytes) else image
        t1 = time.perf_counter()
        lines = []
        for line in self.detect_lines(worker.det, bgr):
            text, conf = self.read_line(worker.rec, warp_line(bgr, line.quad))
            lines.append(TextLine(line.quad, line.score, text, conf))
        candidates = [(ln, p) for ln in lines if ln.confidence >= 0.5 and (p := plate_like(ln.text))]
        tallest = max((ln.height for ln, _ in candidates), default=0.0)
        plates: list[Plate] = []
        for line, text in candidates:
            if line.height < MIN_HEIGHT_SHARE * tallest:
                continue
            cct_text, cct_conf, weakest, box = self.read_plate(worker.plate, bgr, line.box)
            size = (bgr.shape[1], bgr.shape[0])
            if weakest >= PLATE_MIN_CHAR_CONFIDENCE and abs(len(cct_text) - len(text)) <= 2:
                plates.append(Plate(cct_text, cct_conf, *clip_box(box, *size)))
            else:
                plates.append(Plate(text, line.confidence, *clip_box(line.box, *size)))
        plates.sort(key=lambda p: p.confidence, reverse=True)
        t2 = time.perf_counter()
        self.loaded.record((t2 - t1) * 1000)
        return PlateResult(plates, lines, (t2 - t1) * 1000, (t2 - t0) * 1000)

    async def read(self, image: bytes | np.ndarray) -> PlateResult:
        return await self.loaded.run(lambda w: self._run(w, image))


def _build(registry: ModelRegistry, max_pixels: int) -> LoadedTask:
    count = registry.task_workers()
    rec_path = registry.model_file(REC_MODEL)
    try:
        charset = onnx_metadata(rec_path)["character"].splitlines()
    except (KeyError, ValueError, IndexError, OSError) as exc:
        raise ModelUnavailable(f"{rec_path.name} carries no character table: {exc}") from exc
    opened = [registry.open_sessions(m, count) for m in (DET_MODEL, REC_MODEL, PLATE_MODEL)]
    workers = [PlateWorker(*(o.sessions[i] for o in opened)) for i in range(count)]
    loaded = LoadedTask(TASK, registry.task_pool(TASK, list(workers)), opened[0].kind,
                        [o.path.name for o in opened], [r for o in opened for r in o.fallback_reasons])
    reader = PlateReader(loaded, charset, max_pixels)
    # Warm every worker: onnxruntime plans its kernels on the first run of each shape family.
    blank = np.full((64, 160, 3), 255, np.uint8)
    cv2.putText(blank, "AB123", (8, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 3)
    for w in workers:
        reader._run(w, blank)
    loaded.inference_ms.clear()
    loaded.engine = reader
    return loaded


async def get_plate_reader(registry: ModelRegistry, max_pixels: int) -> PlateReader:
    loaded = await registry.get_task(TASK, lambda: _build(registry, max_pixels),
                                     dict.fromkeys((DET_MODEL, REC_MODEL, PLATE_MODEL), registry.task_workers()))
    registry.release_when_idle(TASK, IDLE_S)
    reader: PlateReader = loaded.engine
    return reader
