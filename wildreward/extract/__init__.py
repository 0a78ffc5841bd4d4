"""Stage 1: chat logs -> WildFB-style reward-model data set (paper §1).

Modules, in pipeline order (``pipeline.py`` lists the stages, ``udfs.py`` holds their Ray Data UDFs, ``resume.py``
the config-keyed stage folders and the resumable LLM passes; everything else is plain Python):

- ``read``     chat-log files -> normalised conversations, malformed input quarantined with a reason
- ``turns``    conversation -> (history, query, response, feedback) turns; language detection
- ``filters``  the paper's rule filters, one named reason per dropped turn
- ``backends`` LLM backends for annotation: vLLM engine, OpenAI-compatible HTTP, transformers
- ``annotate`` the 5-category feedback prompt, ``[[n]]`` parsing, the refusal judge
- ``refine``   refusal screening/validation and the {1,2,4,5} -> {1..4} label mapping
- ``mine``     implicit-feedback (hindsight) mining with a MiniLM topic gate; which dropped turns lend labels
- ``split``    train/test split by conversation

Row contracts (python dicts; the Ray glue converts Arrow batches with ``to_pylist``):

conversation: conversation_id str, source str (wildchat|lmsys|sharegpt|arena|generic), user_id str|None,
    language str|None (ISO 639-1), messages list[{role, content}], source_file str
turn: id "<conversation_id>_turn<k>", conversation_id, turn_index k, source, user_id, language,
    history list[{role, content}], query, response, feedback
annotated turn: turn + label int|None (raw 1-5), label_probs list[float]|None (5 classes),
    annotation str|None (raw model output), error str|None
"""
