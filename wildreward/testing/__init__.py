"""Test support shared by ``tests/`` and ``benchmarks/``, importable from the installed package (no ``sys.path``
edits): :mod:`~wildreward.testing.openai_stub` (local OpenAI-compatible annotator servers) and
:mod:`~wildreward.testing.fake_cluster` (a fake multi-node Ray cluster, its trace, and process helpers).

Nothing in the pipeline imports this package; its modules import their heavy dependencies (aiohttp, httpx, psutil,
Ray helpers) themselves, so ``import wildreward.testing`` alone costs nothing."""
