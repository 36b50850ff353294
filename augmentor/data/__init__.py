"""Data: the HDF5 contract (schema, writer, reader, shards), the plug-in dataset and readers of real data."""

from augmentor.data.dataset import H5Dataset, Stage, collate, mix, pretrain_then_finetune
from augmentor.data.provenance import make_provenance, sha256_file
from augmentor.data.reader import H5File, read_info
from augmentor.data.schema import DatasetInfo, SampleKey, Source
from augmentor.data.shards import join_shards
from augmentor.data.writer import H5Writer

__all__ = [
    "DatasetInfo",
    "H5Dataset",
    "H5File",
    "H5Writer",
    "SampleKey",
    "Source",
    "Stage",
    "collate",
    "join_shards",
    "make_provenance",
    "mix",
    "pretrain_then_finetune",
    "read_info",
    "sha256_file",
]
