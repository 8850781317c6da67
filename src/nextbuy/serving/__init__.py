"""Serving a registered model: the scorer, the MLflow pyfunc around it, the checks on what
is loaded, REST scoring (``nextbuy serve``) and batch top-K (``nextbuy batch-topk``).

Parts: ``bundle`` (:class:`ServingBundle`, the pure scorer, and its reading from the files
deploy stores with a model), ``model`` (:class:`NextbuyModel`, the pyfunc), ``integrity``
(file digests, the checked download), ``readers`` (the bundle's files), ``requests``
(request validation and cancellation), ``batch`` (top-K for every product), ``asgi`` (what
the REST guards share), ``limits`` (rows, slots, queue and drain of a server process) and
``rest_app`` (the app ``nextbuy serve`` runs: ``uvicorn nextbuy.serving.rest_app:app``).

A model is loaded from what deploy stores with it (``bundle.STORED_FILES``, the store's
product keys, the digest tags): one that lacks any of it is refused, naming what is missing
and how to re-register it.

Each name below is imported from its part on first use, so importing this package imports
none of them: a process that only scores (a Spark executor unpickling a bundle) never imports
MLflow, which the pyfunc and the request checks need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nextbuy.faces import lazy_names

if TYPE_CHECKING:
    from nextbuy.serving.batch import in_store_keys, shard_sources, write_top_k
    from nextbuy.serving.bundle import PAIR_COLUMNS, STORED_FILES, TOPK_COLUMNS, ServingBundle, with_prior
    from nextbuy.serving.integrity import (
        ARTIFACT_MANIFEST,
        ARTIFACT_SHA256,
        artifact_tags,
        download_checked,
        parse_manifest,
        verify_model_files,
        verify_model_uri,
    )
    from nextbuy.serving.limits import SERVING_ENV
    from nextbuy.serving.model import NextbuyModel
    from nextbuy.serving.readers import RETRIEVAL_FILE
    from nextbuy.serving.requests import INPUT_COLUMNS, MAX_REQUEST_ROWS, MAX_TOP_K
    from nextbuy.serving.rest_app import FAST_PATH_ENV, MAX_BODY_BYTES, MAX_BODY_BYTES_ENV, max_body_bytes

__all__ = [
    "ARTIFACT_MANIFEST",
    "ARTIFACT_SHA256",
    "FAST_PATH_ENV",
    "INPUT_COLUMNS",
    "MAX_BODY_BYTES",
    "MAX_BODY_BYTES_ENV",
    "MAX_REQUEST_ROWS",
    "MAX_TOP_K",
    "PAIR_COLUMNS",
    "RETRIEVAL_FILE",
    "SERVING_ENV",
    "STORED_FILES",
    "TOPK_COLUMNS",
    "NextbuyModel",
    "ServingBundle",
    "artifact_tags",
    "download_checked",
    "in_store_keys",
    "max_body_bytes",
    "parse_manifest",
    "shard_sources",
    "verify_model_files",
    "verify_model_uri",
    "with_prior",
    "write_top_k",
]

# The part that defines each name of ``__all__``.
_PART_OF = {
    **dict.fromkeys(("in_store_keys", "shard_sources", "write_top_k"), "batch"),
    **dict.fromkeys(
        ("PAIR_COLUMNS", "STORED_FILES", "TOPK_COLUMNS", "ServingBundle", "with_prior"), "bundle"
    ),
    **dict.fromkeys(
        (
            "ARTIFACT_MANIFEST",
            "ARTIFACT_SHA256",
            "artifact_tags",
            "download_checked",
            "parse_manifest",
            "verify_model_files",
            "verify_model_uri",
        ),
        "integrity",
    ),
    "SERVING_ENV": "limits",
    "NextbuyModel": "model",
    "RETRIEVAL_FILE": "readers",
    **dict.fromkeys(("INPUT_COLUMNS", "MAX_REQUEST_ROWS", "MAX_TOP_K"), "requests"),
    **dict.fromkeys(("FAST_PATH_ENV", "MAX_BODY_BYTES", "MAX_BODY_BYTES_ENV", "max_body_bytes"), "rest_app"),
}


__getattr__ = lazy_names(__name__, _PART_OF, globals())
