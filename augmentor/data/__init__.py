"""Data: the HDF5 contract (schema, writer, reader, shards), the plug-in dataset and readers of real data.

Names are imported lazily so that commands which never touch torch (ingest, inspect) start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "H5Dataset": "augmentor.data.dataset",
    "Stage": "augmentor.data.dataset",
    "collate": "augmentor.data.dataset",
    "mix": "augmentor.data.dataset",
    "pretrain_then_finetune": "augmentor.data.dataset",
    "make_provenance": "augmentor.data.provenance",
    "sha256_file": "augmentor.data.provenance",
    "H5File": "augmentor.data.reader",
    "read_info": "augmentor.data.reader",
    "DatasetInfo": "augmentor.data.schema",
    "SampleKey": "augmentor.data.schema",
    "Source": "augmentor.data.schema",
    "join_shards": "augmentor.data.shards",
    "H5Writer": "augmentor.data.writer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'augmentor.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
