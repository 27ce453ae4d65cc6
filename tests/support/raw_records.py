"""Produce Kafka records of any shape, the way a hostile or broken producer could.

confluent-kafka's Producer only takes header names as ``str`` (and turns bytes into their repr), but
the Kafka protocol carries header names as bytes. This calls librdkafka (the copy bundled with
confluent-kafka) through ctypes, so a test can write header names that are not UTF-8, null header
values, empty or binary keys, and values of any size.
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import confluent_kafka

_VTYPE_TOPIC, _VTYPE_PARTITION, _VTYPE_VALUE, _VTYPE_KEY, _VTYPE_MSGFLAGS, _VTYPE_HEADERS = 1, 3, 4, 5, 7, 10
_MSG_F_COPY = 0x2


@dataclass(frozen=True)
class RawRecord:
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[bytes, bytes | None]] = field(default_factory=tuple)


class _Mem(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class _U(ctypes.Union):
    _fields_ = [("cstr", ctypes.c_char_p), ("i32", ctypes.c_int32), ("mem", _Mem), ("ptr", ctypes.c_void_p),
                ("_pad", ctypes.c_char * 64)]


class _VU(ctypes.Structure):
    _fields_ = [("vtype", ctypes.c_int), ("u", _U)]


def _lib() -> ctypes.CDLL:
    libdir = os.path.join(os.path.dirname(confluent_kafka.__file__), "..", "confluent_kafka.libs")
    found = glob.glob(os.path.join(libdir, "librdkafka*.so*"))
    lib = ctypes.CDLL(found[0]) if found else ctypes.CDLL("librdkafka.so.1")
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.c_size_t]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_headers_new.restype = ctypes.c_void_p
    lib.rd_kafka_headers_new.argtypes = [ctypes.c_size_t]
    lib.rd_kafka_header_add.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ssize_t, ctypes.c_char_p,
                                        ctypes.c_ssize_t]
    lib.rd_kafka_produceva.restype = ctypes.c_void_p
    lib.rd_kafka_produceva.argtypes = [ctypes.c_void_p, ctypes.POINTER(_VU), ctypes.c_size_t]
    lib.rd_kafka_error_string.restype = ctypes.c_char_p
    lib.rd_kafka_error_string.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_flush.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_flush.restype = ctypes.c_int
    lib.rd_kafka_outq_len.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
    return lib


def produce_raw(bootstrap: str, topic: str, records: Iterable[RawRecord], *, partition: int = 0,
                max_message_bytes: int = 32 * 1024 * 1024) -> None:
    """Produce ``records`` in order to one partition (idempotent producer, so the order holds)."""
    lib = _lib()
    conf = lib.rd_kafka_conf_new()
    err = ctypes.create_string_buffer(512)
    for k, v in (("bootstrap.servers", bootstrap), ("enable.idempotence", "true"),
                 ("message.max.bytes", str(max_message_bytes)), ("linger.ms", "5")):
        assert lib.rd_kafka_conf_set(conf, k.encode(), v.encode(), err, 512) == 0, err.value
    rk = lib.rd_kafka_new(0, conf, err, 512)
    assert rk, err.value
    try:
        for rec in records:
            keep: list[object] = []
            vus: list[_VU] = []

            def vu(vtype: int, vus: list[_VU] = vus) -> _VU:
                v = _VU()
                v.vtype = vtype
                vus.append(v)
                return v

            vu(_VTYPE_TOPIC).u.cstr = topic.encode()
            vu(_VTYPE_PARTITION).u.i32 = partition
            for vtype, data in ((_VTYPE_VALUE, rec.value), (_VTYPE_KEY, rec.key)):
                if data is not None:
                    buf = ctypes.create_string_buffer(data, len(data))
                    keep.append(buf)
                    v = vu(vtype)
                    v.u.mem.ptr = ctypes.cast(buf, ctypes.c_void_p)
                    v.u.mem.size = len(data)
            if rec.headers:
                hdrs = lib.rd_kafka_headers_new(len(rec.headers))
                for name, value in rec.headers:
                    lib.rd_kafka_header_add(hdrs, name, len(name), value, -1 if value is None else len(value))
                vu(_VTYPE_HEADERS).u.ptr = hdrs  # owned by the message from here on
            vu(_VTYPE_MSGFLAGS).u.i32 = _MSG_F_COPY
            arr = (_VU * len(vus))(*vus)
            error = lib.rd_kafka_produceva(rk, arr, len(vus))
            assert not error, lib.rd_kafka_error_string(error)
        assert lib.rd_kafka_flush(rk, 60_000) == 0, "records not delivered"
    finally:
        lib.rd_kafka_destroy(rk)
