"""Writing an offline memory plan into a .tflite as TFLM's `OfflineMemoryAllocation` metadata.

The format (TFLM's `micro/docs/memory_management.md`, read by `GetOfflinePlannedOffsets` in
`micro_allocation_info.cpp`): a metadata entry named "OfflineMemoryAllocation" whose buffer
holds int32 values [version, number of subgraphs, number of offsets n, n offsets], one per
tensor of every subgraph, -1 for "TFLM plans this one".

How the model stays byte-identical: a flatbuffer's references are relative and unsigned
(forward only), except a table's reference to its vtable, which is signed. So the old file
is kept whole and shifted by N bytes (a multiple of 16, keeping every buffer's alignment),
and a new header goes in front of it: a new root `Model` table whose fields point forward
to the old operator codes, subgraphs, description and signatures, a new buffers vector (the
old Buffer tables, then the plan's) and a new metadata vector (the old entries, then the
plan's). Every old byte is still there, at its old position + N, so every buffer, tensor and
operator is unchanged; the old 8-byte file header is left as unused bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import ModelFileError, UnsupportedFeatureError
from . import reader

METADATA_NAME = b"OfflineMemoryAllocation"
FORMAT_VERSION = 1
SHIFT_ALIGNMENT = 16
# Model's fields (schema.fbs): 0 version (uint), then only references: operator_codes,
# subgraphs, description, buffers, metadata_buffer, metadata, signature_defs,
# external_buffer_groups (newer schemas).
_MODEL_FIELDS = 9
_BUFFERS_FIELD = 4
_METADATA_FIELD = 6
_MAX_PLAN_ENTRIES = 1 << 20


@dataclass(frozen=True)
class OfflinePlan:
    version: int
    subgraphs: int
    offsets: list[int]


def _u32(data: bytes, at: int) -> int:
    if at < 0 or at + 4 > len(data):
        raise IndexError("offset outside the file")
    return struct.unpack_from("<I", data, at)[0]


def _u16(data: bytes, at: int) -> int:
    if at < 0 or at + 2 > len(data):
        raise IndexError("offset outside the file")
    return struct.unpack_from("<H", data, at)[0]


class _Table:
    """A flatbuffer table read straight from the bytes: its fields' absolute positions."""

    def __init__(self, data: bytes, position: int):
        self.data = data
        self.position = position
        vtable = position - struct.unpack_from("<i", data, position)[0]
        size = _u16(data, vtable)
        self.fields = [_u16(data, vtable + 4 + 2 * k) for k in range((size - 4) // 2)]

    def field_position(self, field: int) -> int | None:
        if field >= len(self.fields) or not self.fields[field]:
            return None
        return self.position + self.fields[field]

    def reference(self, field: int) -> int | None:
        """The absolute position a reference field points to, or None when it is absent."""
        at = self.field_position(field)
        return None if at is None else at + _u32(self.data, at)

    def scalar_u32(self, field: int, default: int = 0) -> int:
        at = self.field_position(field)
        return default if at is None else _u32(self.data, at)


def _vector(data: bytes, position: int) -> list[int]:
    """The absolute positions of the tables a vector of tables refers to."""
    count = _u32(data, position)
    if count > len(data) // 4:
        raise IndexError("vector longer than the file")
    return [position + 4 + 4 * j + _u32(data, position + 4 + 4 * j) for j in range(count)]


def _string(data: bytes, position: int) -> bytes:
    length = _u32(data, position)
    if position + 4 + length > len(data):
        raise IndexError("string outside the file")
    return data[position + 4: position + 4 + length]


def _parse(data: bytes, name: str):
    reader.inspect_bytes(data, name)       # identifier, structure, buffers inside the file
    try:
        root = _Table(data, _u32(data, 0))
        buffers = _vector(data, root.reference(_BUFFERS_FIELD)) \
            if root.reference(_BUFFERS_FIELD) is not None else []
        metadata_at = root.reference(_METADATA_FIELD)
        metadata = _vector(data, metadata_at) if metadata_at is not None else []
        entries = []
        for position in metadata:
            entry = _Table(data, position)
            name_at = entry.reference(0)
            entries.append((position, _string(data, name_at) if name_at is not None else b"",
                            entry.scalar_u32(1)))
    except (IndexError, struct.error) as exc:
        raise ModelFileError(f"{name} is truncated or corrupt ({exc})",
                             hint="re-export the model") from None
    return root, buffers, entries


def read_offline_plan(data: bytes, name: str = "model") -> OfflinePlan | None:
    """The model's `OfflineMemoryAllocation` plan as TFLM would read it, or None."""
    _, buffers, entries = _parse(data, name)
    found = None
    for _, entry_name, buffer_index in entries:
        # TFLM walks every entry and keeps the last one with this exact name.
        if entry_name == METADATA_NAME:
            found = buffer_index
    if found is None:
        return None
    if found >= len(buffers):
        raise ModelFileError(f"{name}'s OfflineMemoryAllocation names buffer {found}, which "
                             "does not exist", hint="re-plan the model with --memory-plan")
    try:
        data_at = _Table(data, buffers[found]).reference(0)
        raw = b"" if data_at is None else data[data_at + 4: data_at + 4 + _u32(data, data_at)]
    except (IndexError, struct.error):
        raw = b""
    if len(raw) < 12 or len(raw) % 4:
        raise ModelFileError(f"{name}'s OfflineMemoryAllocation buffer is malformed",
                             hint="re-plan the model with --memory-plan")
    version, subgraphs, count = struct.unpack_from("<iii", raw, 0)
    if count < 0 or len(raw) < 12 + 4 * count:
        raise ModelFileError(f"{name}'s OfflineMemoryAllocation buffer is shorter than the "
                             f"{count} offsets it announces",
                             hint="re-plan the model with --memory-plan")
    return OfflinePlan(version, subgraphs, list(struct.unpack_from(f"<{count}i", raw, 12)))


def plan_payload(offsets: list[int], subgraphs: int) -> bytes:
    return struct.pack(f"<iii{len(offsets)}i", FORMAT_VERSION, subgraphs, len(offsets),
                       *offsets)


class _Writer:
    """The new header, written front to back at known absolute positions."""

    def __init__(self):
        self.out = bytearray()

    @property
    def here(self) -> int:
        return len(self.out)

    def pad(self, alignment: int, before: int = 0) -> None:
        while (self.here + before) % alignment:
            self.out.append(0)

    def u16(self, *values: int) -> None:
        self.out += struct.pack(f"<{len(values)}H", *values)

    def u32(self, value: int) -> None:
        self.out += struct.pack("<I", value)

    def i32(self, value: int) -> None:
        self.out += struct.pack("<i", value)


def embed_offline_plan(data: bytes, offsets: list[int], *, name: str = "model",
                       replace: bool = False) -> bytes:
    """`data` with `offsets` as its OfflineMemoryAllocation and every old byte kept.

    A model that already has a plan is refused unless `replace` is set; then the old entry
    is dropped from the metadata list (its buffer stays, unused, so buffer indices hold).
    """
    root, buffers, entries = _parse(data, name)
    info = reader.inspect_bytes(data, name)
    tensor_count = sum(sg.tensor_count for sg in info.subgraphs)
    if len(offsets) != tensor_count or len(offsets) > _MAX_PLAN_ENTRIES:
        raise ValueError(f"a plan needs one offset per tensor ({tensor_count}), "
                         f"not {len(offsets)}")
    if any(index >= _MODEL_FIELDS and value for index, value in enumerate(root.fields)):
        raise UnsupportedFeatureError(
            f"{name} uses Model fields this tinyforge does not know; it cannot add a memory "
            "plan without risking them", hint="build with --memory-plan off")
    _refuse_external_buffers(data, buffers, name)
    kept = [(position, entry_name) for position, entry_name, _ in entries
            if not (replace and entry_name == METADATA_NAME)]
    if not replace and any(entry_name == METADATA_NAME for _, entry_name, _ in entries):
        raise UnsupportedFeatureError(
            f"{name} already carries an offline memory plan",
            hint="keep it (--memory-plan off) or replace it (--memory-plan replace)")
    payload = plan_payload(offsets, len(info.subgraphs))
    old = {k: root.reference(k) for k in range(1, _MODEL_FIELDS)}
    return _write(data, root.scalar_u32(0), old, buffers, [p for p, _ in kept], payload)


def _refuse_external_buffers(data: bytes, buffers: list[int], name: str) -> None:
    # Buffer.offset (models over 2 GB) is counted from the start of the file: shifting the
    # file would move what it points at.
    for position in buffers:
        table = _Table(data, position)
        at = table.field_position(1)
        if at is not None and struct.unpack_from("<Q", data, at)[0] > 1:
            raise UnsupportedFeatureError(
                f"{name} keeps weights outside its flatbuffer (a model over 2 GB)",
                hint="build with --memory-plan off")


def _write(data: bytes, version: int, old: dict[int, int | None], buffers: list[int],
           metadata: list[int], payload: bytes) -> bytes:
    """The new header followed by the old file; returns the whole new model."""
    w = _Writer()
    w.u32(32)                       # the root table is at 32
    w.out += reader.TFLITE_IDENTIFIER
    # Root vtable at 8: size, table size, one entry per field (version at 4, then 4 each).
    table_size = 4 + 4 * _MODEL_FIELDS
    present = [k for k in range(1, _MODEL_FIELDS)
               if old[k] is not None or k in (_BUFFERS_FIELD, _METADATA_FIELD)]
    w.u16(4 + 2 * _MODEL_FIELDS, table_size, 4,
          *[4 + 4 * k if k in present else 0 for k in range(1, _MODEL_FIELDS)])
    w.pad(4)
    assert w.here == 32
    w.i32(32 - 8)
    w.u32(version)
    slots = {}
    for k in range(1, _MODEL_FIELDS):
        slots[k] = w.here
        w.u32(0)                    # filled in below, once the targets are known
    vectors = {}
    vectors[_BUFFERS_FIELD] = w.here
    w.u32(len(buffers) + 1)
    buffer_slots = w.here
    w.out += bytes(4 * (len(buffers) + 1))
    vectors[_METADATA_FIELD] = w.here
    w.u32(len(metadata) + 1)
    metadata_slots = w.here
    w.out += bytes(4 * (len(metadata) + 1))
    # The new Metadata table: name, buffer index.
    metadata_vtable = w.here
    w.u16(8, 12, 4, 8)
    metadata_table = w.here
    w.i32(metadata_table - metadata_vtable)
    name_slot = w.here
    w.u32(0)
    w.u32(len(buffers))
    name_at = w.here
    w.u32(len(METADATA_NAME))
    w.out += METADATA_NAME + b"\0"
    w.pad(4)
    # The new Buffer table: its data vector, aligned to 16 like the converter's buffers.
    buffer_vtable = w.here
    w.u16(6, 8, 4)
    w.pad(4)
    buffer_table = w.here
    w.i32(buffer_table - buffer_vtable)
    data_slot = w.here
    w.u32(0)
    w.pad(16, before=4)
    data_at = w.here
    w.u32(len(payload))
    w.out += payload
    w.pad(SHIFT_ALIGNMENT)
    shift = w.here                  # where the old file starts: a multiple of 16

    def point(slot: int, target: int) -> None:
        struct.pack_into("<I", w.out, slot, target - slot)

    for k in range(1, _MODEL_FIELDS):
        target = vectors.get(k, None if old[k] is None else old[k] + shift)
        if target is not None:
            point(slots[k], target)
    for j, position in enumerate(buffers):
        point(buffer_slots + 4 * j, position + shift)
    point(buffer_slots + 4 * len(buffers), buffer_table)
    for j, position in enumerate(metadata):
        point(metadata_slots + 4 * j, position + shift)
    point(metadata_slots + 4 * len(metadata), metadata_table)
    point(name_slot, name_at)
    point(data_slot, data_at)
    return bytes(w.out) + data
