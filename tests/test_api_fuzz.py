"""A property-based fuzz of the whole REST API from its own OpenAPI schema (schemathesis, in-process
through the ASGI app): valid and invalid bodies, forms, path parameters and edge values for every
endpoint. The server must never answer 5xx, every answer must be one the schema declares, with the
declared body (errors are ``{"error": str}``), and data the schema calls invalid must be refused. A
second fuzz sends only requests that make sense for the model they name (random prompts, classes, seeds,
guidance, samplers), which must all succeed. Tiny sampling limits (one image, two steps) keep it fast."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra (make test)")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (hypothesis comes with schemathesis)
from hypothesis import strategies as st  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from genlab.diffusion.samplers import SAMPLERS  # noqa: E402
from genlab.server.app import create_app  # noqa: E402
from genlab.server.limits import ServerLimits  # noqa: E402
from genlab.server.registry import Registry  # noqa: E402
from genlab.server.routes.attack import ATTACKS  # noqa: E402
from genlab.server.routes.generate import MAX_GUIDANCE, MAX_SEED  # noqa: E402

# Every operation of the API; the first test fails when one is added without being fuzzed here.
OPERATIONS = [
    ("GET", "/api/health"),
    ("GET", "/api/models"),
    ("GET", "/api/models/{name}/metrics"),
    ("GET", "/api/models/{name}/images/{index}"),
    ("POST", "/api/generate"),
    ("POST", "/api/generate/stream"),
    ("POST", "/api/attack"),
]
EXAMPLES = 40  # per operation
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
# Not "schema-valid data is accepted": whether a request makes sense depends on the model it names (a prompt
# for a text-to-image run, a class for a class run), which the schema does not say; such requests get a
# declared 4xx, which the other checks verify, and test_sensible_requests_all_succeed covers the rest.
EXCLUDED = [positive_data_acceptance]


@pytest.fixture(scope="module")
def api(served_runs) -> SimpleNamespace:
    root = served_runs
    registry = Registry([root / "diffusion", root / "gan", root / "classifier", root / "t2i"])
    # One client and no rate limit to speak of; one image of two steps at most.
    limits = ServerLimits(max_images=1, max_steps=2, rate_per_minute=1e9, burst=10**9)
    app = create_app(registry, limits, allowed_hosts=("testserver",))  # the host schemathesis sends
    _steer_to_the_served_runs(app.openapi(), registry, limits)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return SimpleNamespace(schema=schema, registry=registry, limits=limits)


def _steer_to_the_served_runs(spec: dict, registry: Registry, limits: ServerLimits) -> None:
    """Steer the fuzz's valid examples to served runs (and one unknown name) and into the server's limits
    (which /api/models reports), so that they reach the models instead of all ending in a 404 or 422
    before any work: the runs and limits are known when the server starts, not in the static schema.
    Invalid examples still go anywhere. Edits the app's cached OpenAPI document, for this test only."""
    names = [*registry.entries, "nope"]
    schemas = spec["components"]["schemas"]
    generate = schemas["GenerateRequest"]["properties"]
    attack = next(v for k, v in schemas.items() if k.startswith("Body_attack"))["properties"]
    generate["model"]["enum"] = attack["model"]["enum"] = names
    generate["sampler"]["enum"] = list(SAMPLERS)
    attack["attack"]["enum"] = list(ATTACKS)
    for prop, low, high in (
        (generate["num_images"], 1, limits.max_images),
        (generate["steps"], 1, limits.max_steps),
        (generate["seed"], 0, MAX_SEED),
        (generate["guidance"], 0, MAX_GUIDANCE),
        (attack["steps"], 1, limits.max_steps),
        (attack["eps"], 0, limits.max_eps),
        (next(s for s in attack["index"]["anyOf"] if s.get("type") == "integer"), 0, 10),
    ):
        prop.update(minimum=low, maximum=high)
    for item in spec["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "name":
                    parameter["schema"]["enum"] = names
                if parameter["name"] == "index":
                    parameter["schema"].update(minimum=0, maximum=10)


def test_every_operation_is_fuzzed(api):
    found = {(r.ok().method.upper(), r.ok().path) for r in api.schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_the_api_answers_as_its_schema_says(api, method, path):
    operation = api.schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )

    @given(case=cases)
    @FUZZ
    def answers(case) -> None:
        case.call_and_validate(excluded_checks=EXCLUDED)

    answers()


def _sensible_generate_bodies(api: SimpleNamespace) -> st.SearchStrategy[dict]:
    """Bodies that make sense for the model they name: a prompt (any text) for a text-to-image run, a class
    of the run or none for the others, anything within the limits for the rest."""
    limits = api.limits
    common = {
        "steps": st.integers(1, limits.max_steps),
        "sampler": st.sampled_from(list(SAMPLERS)),
        "guidance": st.floats(0, MAX_GUIDANCE),
        "seed": st.integers(0, MAX_SEED),
        "num_images": st.integers(1, limits.max_images),
    }
    per_model = []
    for name, entry in api.registry.entries.items():
        if entry.kind == "text-to-image":
            prompt = st.text(min_size=1, max_size=limits.max_prompt_chars).filter(str.strip)
            negative = st.text(max_size=limits.max_prompt_chars)
            fields = {"prompt": prompt, "negative_prompt": negative}
        elif entry.kind in ("diffusion", "gan"):
            fields = {"class_name": st.sampled_from([None, *entry.class_names])}
        else:
            continue
        per_model.append(st.fixed_dictionaries({"model": st.just(name), **fields, **common}))
    return st.one_of(per_model)


@pytest.mark.parametrize("path", ["/api/generate", "/api/generate/stream"])
def test_sensible_requests_all_succeed(api, path):
    operation = api.schema[path]["POST"]

    @given(body=_sensible_generate_bodies(api))
    @FUZZ
    def succeeds(body: dict) -> None:
        response = operation.Case(body=body, media_type="application/json").call_and_validate()
        assert response.status_code == 200, response.text
        if path.endswith("stream"):
            assert "event: done" in response.text, response.text[-300:]

    succeeds()


def test_sensible_attacks_all_succeed(api):
    operation = api.schema["/api/attack"]["POST"]
    classifier = api.registry.entries["classifier"]
    forms = st.fixed_dictionaries(
        {
            "model": st.just("classifier"),
            "attack": st.sampled_from(list(ATTACKS)),
            "eps": st.floats(0, api.limits.max_eps),
            "steps": st.integers(1, api.limits.max_steps),
            "index": st.integers(0, len(classifier.data) - 1),
        }
    )

    @given(form=forms)
    @FUZZ
    def succeeds(form: dict) -> None:
        response = operation.Case(body=form, media_type="multipart/form-data").call_and_validate()
        assert response.status_code == 200, response.text

    succeeds()
