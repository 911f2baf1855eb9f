"""Convert the MSD_musicnn checkpoint of the `musicnn` 0.1.0 wheel into streamgenre's weight file.

The wheel (Jordi Pons, MTG-UPF, ISC licence) carries TensorFlow 1.x checkpoints; TensorFlow is
not needed to read them. A checkpoint is a *tensor bundle*: ``.index`` is a LevelDB-style sorted
table mapping each variable name to a `BundleEntryProto` (dtype, shape, offset, size, CRC32C)
and ``.data-00000-of-00001`` holds the raw little-endian tensors. This script reads both with
the standard library and numpy, verifies every CRC, keeps the inference weights (Adam's slots
are dropped) and writes them as a plain ``.npz`` (no pickle) under the names
`streamgenre.models.musicnn` expects. Run once, by a maintainer; the package ships the result.

    pip install --no-deps musicnn==0.1.0   # its own pins (tensorflow, numpy<1.17) target Python 3.7
    python scripts/convert_musicnn.py [--wheel-dir DIR] [--out streamgenre/models/weights/msd_musicnn.npz]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import struct
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
BLOCK_TRAILER_BYTES = 5  # compression type (1 byte) + masked CRC32C of the block (4 bytes)
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}  # TensorFlow's DataType enum
_CRC_TABLE: list[int] = []


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TensorFlow stores for every tensor."""
    if not _CRC_TABLE:
        for byte in range(256):
            crc = byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
            _CRC_TABLE.append(crc)
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    """LevelDB's masking of a stored CRC (so a CRC of data holding CRCs stays informative)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def _proto_fields(buffer: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message: varints as ints, the rest as bytes."""
    fields, position = [], 0
    while position < len(buffer):
        tag, position = _varint(buffer, position)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, position = _varint(buffer, position)
        elif wire == 2:
            length, position = _varint(buffer, position)
            value, position = buffer[position : position + length], position + length
        elif wire == 5:
            value, position = struct.unpack_from("<I", buffer, position)[0], position + 4
        elif wire == 1:
            value, position = struct.unpack_from("<Q", buffer, position)[0], position + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


def _block(table: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of one table block, keys rebuilt from their shared prefixes."""
    if table[offset + size] != 0:
        raise ValueError("compressed table blocks are not supported (TensorFlow writes bundles uncompressed)")
    stored_crc = struct.unpack_from("<I", table, offset + size + 1)[0]
    if masked(crc32c(table[offset : offset + size + 1])) != stored_crc:
        raise ValueError(f"table block at {offset} fails its CRC: the .index file is damaged")
    block = table[offset : offset + size]
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    entries, position, key = [], 0, b""
    while position < end:
        shared, position = _varint(block, position)
        unshared, position = _varint(block, position)
        value_length, position = _varint(block, position)
        key = key[:shared] + block[position : position + unshared]
        position += unshared
        entries.append((key, block[position : position + value_length]))
        position += value_length
    return entries


def read_index(path: Path) -> dict[str, dict]:
    """Variable name -> {dtype, shape, offset, size, crc32c} from a bundle's ``.index`` table."""
    table = path.read_bytes()
    footer = table[-FOOTER_BYTES:]
    if struct.unpack_from("<Q", footer, FOOTER_BYTES - 8)[0] != TABLE_MAGIC:
        raise ValueError(f"{path} is not a TensorFlow checkpoint index (bad magic)")
    _, position = _varint(footer, 0)  # metaindex handle: unused
    _, position = _varint(footer, position)
    index_offset, position = _varint(footer, position)
    index_size, _ = _varint(footer, position)
    entries = {}
    for _, handle in _block(table, index_offset, index_size):
        block_offset, position = _varint(handle, 0)
        block_size, _ = _varint(handle, position)
        for key, value in _block(table, block_offset, block_size):
            if key:  # the empty key holds the BundleHeaderProto
                entries[key.decode()] = _entry(value)
    return entries


def _entry(value: bytes) -> dict:
    entry = {"dtype": 0, "shape": [], "shard": 0, "offset": 0, "size": 0, "crc32c": None}
    for number, field in _proto_fields(value):
        if number == 1:
            entry["dtype"] = field
        elif number == 2:
            entry["shape"] = [dict(_proto_fields(dim)).get(1, 0) for number_, dim in _proto_fields(field) if number_ == 2]
        elif number in (3, 4, 5):
            entry[{3: "shard", 4: "offset", 5: "size"}[number]] = field
        elif number == 6:
            entry["crc32c"] = field
        elif number == 7:
            raise ValueError("sliced (partitioned) variables are not supported")
    return entry


def read_bundle(folder: Path, names: list[str] | None = None, stem: str = "") -> dict[str, np.ndarray]:
    """The tensors of the bundle ``folder/stem.index``, each checked against its CRC32C.

    Args:
        folder: where the bundle's files are.
        names: variables to read (None: all).
        stem: the checkpoint's file stem; the musicnn wheel's is empty (files ``.index``, ``.data-…``).
    """
    index = read_index(folder / f"{stem}.index")
    data = (folder / f"{stem}.data-00000-of-00001").read_bytes()
    tensors = {}
    for name in names if names is not None else sorted(index):
        entry = index[name]
        if entry["shard"] != 0 or entry["dtype"] not in DTYPES:
            raise ValueError(f"{name}: shard {entry['shard']}, dtype {entry['dtype']} not supported")
        raw = data[entry["offset"] : entry["offset"] + entry["size"]]
        if entry["crc32c"] is not None and masked(crc32c(raw)) != entry["crc32c"]:
            raise ValueError(f"{name}: data fails its CRC32C; the checkpoint is damaged")
        tensors[name] = np.frombuffer(raw, dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"]).copy()
    return tensors


def inference_names(index: dict[str, dict]) -> list[str]:
    """Every variable a forward pass needs: all but the optimiser's slots and counters."""
    return sorted(name for name in index if not name.endswith(("/Adam", "/Adam_1")) and "beta1_power" not in name and "beta2_power" not in name)


def wheel_dir() -> Path:
    """Where the installed `musicnn` package keeps its model folders."""
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("musicnn is not installed: pip install --no-deps musicnn==0.1.0")
    return Path(next(iter(spec.submodule_search_locations)))


def convert(source: Path, out: Path) -> str:
    """Write the inference weights of the bundle in folder `source` to `out`; return its sha256."""
    names = inference_names(read_index(source / ".index"))
    tensors = read_bundle(source, names)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as handle:
        np.savez(handle, **tensors)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel-dir", type=Path, default=None, help="the musicnn package folder [default: the installed one]")
    parser.add_argument("--model", default="MSD_musicnn")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "streamgenre/models/weights/msd_musicnn.npz")
    args = parser.parse_args()
    digest = convert((args.wheel_dir or wheel_dir()) / args.model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), sha256 {digest}")


if __name__ == "__main__":
    main()
