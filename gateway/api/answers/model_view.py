"""A catalog entry as `GET /api/v1/models` lists it: OpenAI's fields, OpenRouter's beside them
(`canonical_slug`, `created`, `architecture`, `supported_parameters`, its pricing fields...), and
ours (`providers`, `is_free`). Clients written for OpenRouter read its fields; none of ours is
renamed or left out for them."""

from decimal import Decimal

from gateway.api.answers import shapes
from gateway.models import ResolvedModel

# What OpenAI-style providers take beside the messages, for a model whose catalog declares no
# list (OpenRouter's names). `max_tokens` is always honoured: the gateway sends every request one.
CHAT_PARAMETERS = (
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
)
EMBEDDING_PARAMETERS = ("dimensions", "encoding_format")


def price_text(value: Decimal | None) -> str:
    return "0" if not value else format(value.normalize(), "f")


def model_view(model: ResolvedModel) -> shapes.Model:
    config = model.config
    embeds_only = _embeds_only(model)
    return shapes.Model(
        id=model.id,
        name=config.name or model.id,
        object="model",
        owned_by=model.providers[0].name,
        providers=[pr.name for pr in model.providers],
        context_length=config.context_length,
        pricing=_pricing(model),
        top_provider=shapes.TopProvider(
            context_length=config.context_length,
            max_completion_tokens=config.max_output_tokens,
            is_moderated=False,
        ),
        is_free=model.is_free,
        canonical_slug=config.canonical_slug or model.id,
        created=config.created,
        description=config.description,
        architecture=_architecture(model, embeds_only),
        supported_parameters=supported_parameters(model, embeds_only),
        per_request_limits=None,
    )


def _pricing(model: ResolvedModel) -> shapes.ModelPricing:
    """Every field present: an unlisted cache price is the prompt price those tokens are charged
    (a "0" would tell a client they are free); an unlisted reasoning price is "0", no price of
    their own: reasoning tokens are charged as the completion tokens they are."""
    p = model.config.pricing
    return shapes.ModelPricing(
        prompt=price_text(p.prompt),
        completion=price_text(p.completion),
        request=price_text(p.request),
        image=price_text(p.image),
        web_search="0",
        internal_reasoning=price_text(p.internal_reasoning),
        input_cache_read=price_text(_or(p.input_cache_read, p.prompt)),
        input_cache_write=price_text(_or(p.input_cache_write, p.prompt)),
    )


def _or(listed: Decimal | None, otherwise: Decimal) -> Decimal:
    return otherwise if listed is None else listed


def _embeds_only(model: ResolvedModel) -> bool:
    """Whether every provider of the model serves embeddings and nothing else."""
    return all(set(p.apis) == {"embeddings"} for p in model.providers)


def _architecture(model: ResolvedModel, embeds_only: bool) -> shapes.Architecture:
    config = model.config
    inputs: list[str] = list(config.input_modalities)
    outputs: list[str] = list(
        config.output_modalities or (("embeddings",) if embeds_only else ("text",))
    )
    return shapes.Architecture(
        modality=f"{'+'.join(inputs)}->{'+'.join(outputs)}",
        input_modalities=inputs,
        output_modalities=outputs,
        tokenizer=config.tokenizer,
        instruct_type=config.instruct_type,
    )


def supported_parameters(model: ResolvedModel, embeds_only: bool) -> list[str]:
    """What `provider.require_parameters` lets through to at least one of the model's providers:
    the union of their declared lists, within the model's own list when it has one. A provider
    that declares none is taken to support everything (as routing takes it), so where nothing
    narrows the answer it is what OpenAI-style providers take for the model's API."""
    declared = [p.supported_parameters for p in model.providers]
    union = None if any(d is None for d in declared) else _in_order(*declared)
    own = model.config.supported_parameters
    if own is not None:
        found = [name for name in own if union is None or name in union]
    elif union is not None:
        found = union
    else:
        return list(EMBEDDING_PARAMETERS if embeds_only else CHAT_PARAMETERS)
    return found if embeds_only or "max_tokens" in found else ["max_tokens", *found]


def _in_order(*lists: tuple[str, ...] | None) -> list[str]:
    return list(dict.fromkeys(name for names in lists for name in names or ()))
