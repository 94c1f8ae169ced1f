"""What an LLM backend needs to see an ``llm`` run as an LLM call: the OpenTelemetry GenAI
semantic conventions (``gen_ai.*``, semconv 1.37+: ``gen_ai.provider.name`` rather than the
deprecated ``gen_ai.system``) and OpenInference's (``llm.*``, what Arize Phoenix reads).

The facts come from where the LangSmith SDKs and LangChain put them on a run:

- model: ``metadata.ls_model_name``, the invocation parameters (``extra.invocation_params``
  or ``metadata.invocation_params``: ``model`` / ``model_name``), or ``inputs.model``; the
  response's model from ``outputs.model`` or ``outputs.response_metadata.model_name``;
- provider: ``metadata.ls_provider`` (LangChain's names, mapped to the semconv's well-known
  values), else guessed from the model name as the LangSmith SDK's own exporter does;
- tokens and costs: :func:`tracestitch.schemas.usage_from_wire` (``usage_metadata``), else an
  OpenAI-shaped ``outputs.usage``;
- time to first chunk: the first ``new_token`` event, measured from the run's start;
- messages: OpenAI-style ``{"role", "content"}`` lists and LangChain message dicts.

Reads the wire dict on the export worker; never raises on odd values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from tracestitch.schemas import usage_from_wire

__all__ = ["MAX_MESSAGES", "genai_attributes", "openinference_kind"]

#: Messages flattened into ``llm.input_messages.N`` / ``llm.output_messages.N`` per span.
MAX_MESSAGES = 64

_OPENINFERENCE_KINDS = {
    "llm": "LLM",
    "chain": "CHAIN",
    "tool": "TOOL",
    "retriever": "RETRIEVER",
    "embedding": "EMBEDDING",
    "prompt": "PROMPT",
    "parser": "CHAIN",
}
_OPERATIONS = {"llm": "chat", "embedding": "embeddings"}

# LangChain's ls_provider -> (gen_ai.provider.name, OpenInference llm.provider, llm.system)
_PROVIDERS: dict[str, tuple[str, str | None, str | None]] = {
    "openai": ("openai", "openai", "openai"),
    "anthropic": ("anthropic", "anthropic", "anthropic"),
    "azure": ("azure.ai.openai", "azure", "openai"),
    "azure_openai": ("azure.ai.openai", "azure", "openai"),
    "azure_ai": ("azure.ai.inference", "azure", None),
    "bedrock": ("aws.bedrock", "aws", None),
    "amazon_bedrock": ("aws.bedrock", "aws", None),
    "bedrock_converse": ("aws.bedrock", "aws", None),
    "google_genai": ("gcp.gemini", "google", None),
    "google_vertexai": ("gcp.vertex_ai", "google", "vertexai"),
    "mistralai": ("mistral_ai", "mistralai", "mistralai"),
    "groq": ("groq", None, None),
    "cohere": ("cohere", "cohere", "cohere"),
    "deepseek": ("deepseek", None, "deepseek"),
    "xai": ("x_ai", None, "xai"),
    "perplexity": ("perplexity", None, None),
    "ibm": ("ibm.watsonx.ai", None, None),
    "watsonx": ("ibm.watsonx.ai", None, None),
}
# Model-name prefixes that identify a provider when the run does not say.
_MODEL_PREFIXES = (
    (("gpt-", "o1", "o3", "o4", "chatgpt", "text-embedding-", "davinci"), "openai"),
    (("claude",), "anthropic"),
    (("gemini",), "google_genai"),
    (("mistral", "mixtral", "codestral"), "mistralai"),
    (("command",), "cohere"),
    (("deepseek",), "deepseek"),
    (("grok",), "xai"),
)
_LC_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def openinference_kind(run_type: str) -> str:
    """``openinference.span.kind`` for a LangSmith run type (unknown types are chains)."""
    return _OPENINFERENCE_KINDS.get(run_type, "CHAIN")


def _invocation_params(run: Mapping[str, Any], meta: Mapping[str, Any]) -> Mapping[str, Any]:
    params = _mapping(_mapping(run.get("extra")).get("invocation_params"))
    return params or _mapping(meta.get("invocation_params"))


def _request_model(
    run: Mapping[str, Any], meta: Mapping[str, Any], params: Mapping[str, Any]
) -> str | None:
    return (
        _text(meta.get("ls_model_name"))
        or _text(params.get("model"))
        or _text(params.get("model_name"))
        or _text(_mapping(run.get("inputs")).get("model"))
    )


def _response_model(outputs: Mapping[str, Any]) -> str | None:
    found = _text(outputs.get("model"))
    if found:
        return found
    response = _mapping(outputs.get("response_metadata"))
    return _text(response.get("model_name")) or _text(response.get("model"))


def _provider(meta: Mapping[str, Any], model: str | None) -> tuple[str, str | None, str | None]:
    given = _text(meta.get("ls_provider"))
    if given is not None:
        known = _PROVIDERS.get(given.lower())
        return known if known is not None else (given, None, None)
    if model is not None:
        lowered = model.lower()
        for prefixes, name in _MODEL_PREFIXES:
            if lowered.startswith(prefixes):
                return _PROVIDERS[name]
    return ("", None, None)


def _usage(run: dict[str, Any]) -> tuple[Any, dict[str, int]]:
    """The run's usage and its token counts (input/output/total) in gen_ai terms."""
    usage = usage_from_wire(run)
    counts = {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "total": usage.total_tokens,
    }
    if counts["input"] is None and counts["output"] is None:
        # An OpenAI response recorded whole: {"usage": {"prompt_tokens", "completion_tokens"}}
        raw = _mapping(_mapping(run.get("outputs")).get("usage"))
        for key, name in (
            ("input", "prompt_tokens"),
            ("output", "completion_tokens"),
            ("total", "total_tokens"),
        ):
            value = raw.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                counts[key] = value
        given = [counts[k] for k in ("input", "output") if counts[k] is not None]
        if counts["total"] is None and given:
            counts["total"] = sum(v for v in given if v is not None)
    return usage, {k: v for k, v in counts.items() if v is not None}


def _first_chunk_seconds(run: Mapping[str, Any], start_us: int) -> float | None:
    for event in run.get("events") or ():
        if isinstance(event, Mapping) and event.get("name") == "new_token":
            when = event.get("time")
            if not isinstance(when, str):
                return None
            try:
                moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
            except ValueError:
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            micros = round(moment.timestamp() * 1_000_000)
            return max(micros - start_us, 0) / 1e6
    return None


def _message(item: Any) -> tuple[str | None, str | None]:
    """(role, text content) of one message in the OpenAI or LangChain shape."""
    if not isinstance(item, Mapping):
        return None, None
    if item.get("lc") == 1 and isinstance(item.get("kwargs"), Mapping):
        # A serialized LangChain message: the class name says the role.
        ident = item.get("id")
        cls = ident[-1] if isinstance(ident, list) and ident else ""
        role = {
            "HumanMessage": "user",
            "AIMessage": "assistant",
            "AIMessageChunk": "assistant",
            "SystemMessage": "system",
            "ToolMessage": "tool",
        }.get(str(cls))
        return role, _content(item["kwargs"].get("content"))
    role = item.get("role")
    if not isinstance(role, str):
        kind = item.get("type")
        role = _LC_ROLES.get(kind) if isinstance(kind, str) else None
    return role, _content(item.get("content"))


def _content(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: keep the text ones
        texts = [
            str(part["text"])
            for part in value
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        ]
        return "".join(texts) if texts else None
    return None


def _flatten_messages(prefix: str, messages: Sequence[Any], attrs: list[tuple[str, Any]]) -> None:
    for i, item in enumerate(messages[:MAX_MESSAGES]):
        role, content = _message(item)
        if role:
            attrs.append((f"{prefix}.{i}.message.role", role))
        if content is not None:
            attrs.append((f"{prefix}.{i}.message.content", content))


def _input_messages(inputs: Mapping[str, Any]) -> Sequence[Any]:
    messages = inputs.get("messages")
    if isinstance(messages, list):
        # LangChain chat models record [[msg, ...]] (one list per prompt): take the first.
        if messages and isinstance(messages[0], list):
            return messages[0]
        return messages
    return ()


def _output_messages(outputs: Mapping[str, Any]) -> tuple[list[Any], list[str]]:
    """Output messages and finish reasons from an OpenAI response or LangChain generations."""
    messages: list[Any] = []
    reasons: list[str] = []
    choices = outputs.get("choices")
    if isinstance(choices, list):
        for choice in choices[:MAX_MESSAGES]:
            choice = _mapping(choice)
            messages.append(choice.get("message"))
            if isinstance(choice.get("finish_reason"), str):
                reasons.append(choice["finish_reason"])
        return messages, reasons
    generations = outputs.get("generations")
    if isinstance(generations, list):
        flat = generations[0] if generations and isinstance(generations[0], list) else generations
        for gen in flat[:MAX_MESSAGES]:
            gen = _mapping(gen)
            if isinstance(gen.get("message"), Mapping):
                messages.append(gen["message"])
            elif isinstance(gen.get("text"), str):
                messages.append({"role": "assistant", "content": gen["text"]})
            reason = _mapping(gen.get("generation_info")).get("finish_reason")
            if isinstance(reason, str):
                reasons.append(reason)
        return messages, reasons
    if isinstance(outputs.get("content"), (str, list)) and ("role" in outputs or "type" in outputs):
        messages.append(outputs)  # an AIMessage or {"role": "assistant", ...} returned whole
    reason = outputs.get("finish_reason") or outputs.get("stop_reason")
    if isinstance(reason, str):
        reasons.append(reason)
    return messages, reasons


def genai_attributes(run: dict[str, Any], start_us: int) -> list[tuple[str, Any]]:
    """GenAI and OpenInference LLM attributes of an ``llm`` (or ``embedding``) run; none for
    other run types."""
    run_type = run.get("run_type")
    operation = _OPERATIONS.get(run_type) if isinstance(run_type, str) else None
    if operation is None:
        return []
    meta = _mapping(_mapping(run.get("extra")).get("metadata"))
    inputs = _mapping(run.get("inputs"))
    outputs = _mapping(run.get("outputs"))
    params = _invocation_params(run, meta)
    request_model = _request_model(run, meta, params)
    response_model = _response_model(outputs)
    provider, oi_provider, oi_system = _provider(meta, request_model or response_model)
    attrs: list[tuple[str, Any]] = [("gen_ai.operation.name", operation)]
    if provider:
        attrs.append(("gen_ai.provider.name", provider))
    if request_model:
        attrs.append(("gen_ai.request.model", request_model))
    if response_model:
        attrs.append(("gen_ai.response.model", response_model))
    model = response_model or request_model
    if model:
        attrs.append(("llm.model_name", model))
    if oi_provider:
        attrs.append(("llm.provider", oi_provider))
    if oi_system:
        attrs.append(("llm.system", oi_system))
    for name, key, kind in (
        ("temperature", "gen_ai.request.temperature", float),
        ("max_tokens", "gen_ai.request.max_tokens", int),
        ("top_p", "gen_ai.request.top_p", float),
    ):
        value = params.get(name, meta.get(f"ls_{name}"))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attrs.append((key, kind(value)))
    if params:
        attrs.append(("llm.invocation_parameters", dict(params)))
    usage, counts = _usage(run)
    for semconv, oi, key in (
        ("gen_ai.usage.input_tokens", "llm.token_count.prompt", "input"),
        ("gen_ai.usage.output_tokens", "llm.token_count.completion", "output"),
        ("gen_ai.usage.total_tokens", "llm.token_count.total", "total"),
    ):
        if key in counts:
            attrs.append((semconv, counts[key]))
            attrs.append((oi, counts[key]))
    details_in = usage.input_token_details or {}
    details_out = usage.output_token_details or {}
    if "cache_read" in details_in:
        attrs.append(("gen_ai.usage.cache_read.input_tokens", details_in["cache_read"]))
        attrs.append(("llm.token_count.prompt_details.cache_read", details_in["cache_read"]))
    if "cache_creation" in details_in:
        attrs.append(("gen_ai.usage.cache_creation.input_tokens", details_in["cache_creation"]))
        attrs.append(("llm.token_count.prompt_details.cache_write", details_in["cache_creation"]))
    if "reasoning" in details_out:
        attrs.append(("gen_ai.usage.reasoning.output_tokens", details_out["reasoning"]))
        attrs.append(("llm.token_count.completion_details.reasoning", details_out["reasoning"]))
    for value, key in (
        (usage.input_cost, "llm.cost.prompt"),
        (usage.output_cost, "llm.cost.completion"),
        (usage.total_cost, "llm.cost.total"),
    ):
        if value is not None:
            attrs.append((key, float(value)))
    first = _first_chunk_seconds(run, start_us)
    if first is not None:
        attrs.append(("gen_ai.request.stream", True))
        attrs.append(("gen_ai.response.time_to_first_chunk", first))
    response_id = outputs.get("id")
    if isinstance(response_id, str) and response_id:
        attrs.append(("gen_ai.response.id", response_id))
    _flatten_messages("llm.input_messages", _input_messages(inputs), attrs)
    out_messages, reasons = _output_messages(outputs)
    _flatten_messages("llm.output_messages", out_messages, attrs)
    if reasons:
        attrs.append(("gen_ai.response.finish_reasons", reasons))
        attrs.append(("llm.finish_reason", reasons[0]))
    return attrs
