"""The HTTP API and the live-suggestion page (DESIGN §10): `python -m pipeline serve [--model REF] [--host] [--port]`.

    POST /predict        {"text": str, "k": 1..serve.max_k (20) = 5, "mix": "mixture"|"net",
                          "mode": "auto"|"next"|"complete"}
                         -> {"words": [{"word", "prob"}, ...], "completing": str | null, "model": str}
    POST /predict/batch  {"texts": [str, ...], "k": ..., "mix": ..., "mode": ...}
                         -> {"results": [[{"word", "prob"}, ...], ...], "completing": [str | null, ...], "model": str}
    POST /explain        {"text": str, "k": 1..serve.max_k = 5} -> {"models": [{"model", "cell", "words", "completing",
                         "top", "context": [{"word", "distance", "influence"}, ...], "looks_back"}, ...]}
                         (serve.explain's networks; completions of a half-typed word, as /predict)
    GET  /health         model name, version, run id, cache figures
    GET  /               the page (pipeline/serving/static/index.html, read once at start-up)

Text that ends in a word character ends in a word being typed: the words returned complete it ("completing" says
which prefix; "mode": "next" asks for the next word regardless, "complete" completes the last word even after a
space). Suggestions come from the model's fitted mixture (network + n-gram + neural cache, pipeline/serving/mixed.py) when
it carries one, and "model" says so ("marathi-nwp-lstm/3 + 4-gram + cache"); "mix": "net" asks for the network alone.
Bad requests get a 4xx whose JSON `{"error": ..., "field": ...}` names the field: the body's shape is pydantic's, k, mode
and each text go through request_check.check_request, the check the pyfunc and `predict` run too. Input never
reaches the filesystem and never produces a 5xx. Model calls run one at a time under a lock (see `IncrementalPredictor`).
"""
# No `from __future__ import annotations`: FastAPI must see the request models, which are local to create_app.
import ipaddress
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.checkpoints import CheckpointError, ModelBundle
from pipeline.config import Config, ServeConfig
from pipeline.evaluation.mixture import Mixture
from pipeline.serving.explain import Explainer
from pipeline.serving.mixed import ServedPredictor, load_for, predictor_for
from pipeline.serving.request_check import MODES, RequestError, check_k, check_request, check_text
from pipeline.serving.statecache import StateCache

STATIC = Path(__file__).resolve().parent / "static"
JSON_TYPES = ("application/json",)


# ------------------------------------------------------------------------------------------------ resolving a model
def _load(ref: str, cfg: Config | None = None) -> tuple[ModelBundle, dict[str, Any]]:
    """The one place a model reference is resolved (MLflow run id or URI, checkpoint, export directory)."""
    from pipeline.tracking import load_bundle

    return load_bundle(ref, cfg)


def newest_checkpoint(runs_dir: Path) -> Path | None:
    """best.ckpt (else last.ckpt) of the most recently written run, LSTM runs first (the default model is an LSTM)."""
    found = []
    for run in runs_dir.glob("*/checkpoints") if runs_dir.is_dir() else []:
        ckpt = next((run / n for n in ("best.ckpt", "last.ckpt") if (run / n).is_file()), None)
        if ckpt is not None:
            found.append(("lstm" in run.parent.name, ckpt.stat().st_mtime, ckpt))
    return max(found)[2] if found else None


def resolve_model(ref: str | None, cfg: Config) -> tuple[ModelBundle, dict[str, Any]]:
    """`ref` if given; else serve.model, falling back to the newest local run (with a message) only when nothing is
    registered under that name: a registered model that fails to load is an error, never a silent switch."""
    if ref:
        return _load(ref, cfg)
    from pipeline.tracking import NotRegistered

    try:
        return _load(cfg.serve.model, cfg)
    except NotRegistered as e:  # nothing registered yet: the newest local run; any other failure is an error
        reason = str(e).splitlines()[0][:200]
    runs_dir = Path(cfg.train.runs_dir)
    ckpt = newest_checkpoint(runs_dir)
    if ckpt is None:
        raise CheckpointError(f"no model to serve: {cfg.serve.model} cannot be loaded ({reason}) and {runs_dir} "
                              "holds no checkpoint; run `make run` first, or pass --model PATH_OR_URI")
    print(f"serve: {cfg.serve.model} is not available ({reason}); serving the newest local run instead: {ckpt}",
          file=sys.stderr)
    return _load(str(ckpt), cfg)


def load_explainers(cfg: Config, served: tuple[str, ModelBundle, dict[str, Any]] | None = None) -> list[Explainer]:
    """serve.explain's networks; one that cannot be loaded is left out with a message (the page shows the others):
    /predict does not depend on them. `served` (reference, bundle, info) is reused when a reference names it."""
    out = []
    for ref in cfg.serve.explain:
        try:
            bundle, info = served[1:] if served is not None and served[0] == ref else _load(ref, cfg)
        except (CheckpointError, ValueError) as e:
            print(f"serve: /explain leaves out {ref}: {str(e).splitlines()[0][:200]}", file=sys.stderr)
            continue
        out.append(Explainer(bundle, model_label(info), cfg.serve.max_context_pieces, cfg.serve.explain_threshold))
    return out


def model_label(info: dict[str, Any]) -> str:
    uri = Path(str(info.get("uri") or "model"))
    name = info.get("name") or uri.name
    if not info.get("version") and uri.suffix == ".ckpt":  # runs/<run>/checkpoints/best.ckpt -> <run>/best.ckpt
        name = f"{uri.parent.parent.name}/{uri.name}"
    return f"{name}/{info['version']}" if info.get("version") else str(name)


# ---------------------------------------------------------------------------------------------------- the app
def _request_models(cfg: ServeConfig):
    # k and mode are any JSON here and checked by check_request (one check for every entry point); the schema still
    # tells a client what they take
    def k_field():
        return Field(5, json_schema_extra={"type": "integer", "minimum": 1, "maximum": cfg.max_k})

    def mode_field():
        return Field("auto", json_schema_extra={"type": "string", "enum": list(MODES)})

    class ExplainRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: StrictStr
        k: Any = k_field()

    class PredictRequest(ExplainRequest):
        mix: Literal["mixture", "net"] | None = None
        mode: Any = mode_field()

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: list[StrictStr] = Field(min_length=1, max_length=cfg.max_batch)
        k: Any = k_field()
        mix: Literal["mixture", "net"] | None = None
        mode: Any = mode_field()

        @field_validator("texts")
        @classmethod
        def _texts(cls, v: list[str]) -> list[str]:
            total = sum(map(len, v))
            if total > cfg.max_request_chars:
                raise ValueError(f"hold {total} characters together; the limit per request is "
                                 f"{cfg.max_request_chars}: send fewer or shorter texts")
            return v

    return PredictRequest, BatchRequest, ExplainRequest


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def _describe(err: dict[str, Any], cfg: ServeConfig) -> tuple[int, str, str]:
    """(status, field, message) for one pydantic error."""
    field, kind, msg = _field(tuple(err.get("loc", ()))), err.get("type", ""), str(err.get("msg", ""))
    if kind == "json_invalid":
        return 400, "body", f"body is not valid JSON ({err.get('ctx', {}).get('error', msg)})"
    if kind == "missing":
        return 422, field, f"{field} is required"
    if kind == "extra_forbidden":
        return 422, field, f"{field} is not a known field (expected text/texts, k, mix and mode)"
    if field == "body" or kind == "model_type":
        return 422, "body", "body must be a JSON object, e.g. {\"text\": \"...\", \"k\": 5}"
    if field == "mix" or field.startswith("mix."):
        return 422, "mix", "mix must be \"mixture\" (the default when the model carries one) or \"net\""
    if field == "texts" and kind in ("too_long", "too_short"):
        return 422, "texts", f"texts must hold 1 to {cfg.max_batch} strings"
    msg = msg.removeprefix("Value error, ")
    return 422, field, f"{field} {msg[0].lower() + msg[1:] if msg else 'is invalid'}"


class _BodyGuard:
    """ASGI middleware: POST bodies must be JSON (415 otherwise) and at most `limit` bytes (413), counted as they
    arrive, so a lying or absent Content-Length cannot get a bigger body through."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in JSON_TYPES:
            return await _send_error(send, 415, "content-type",
                                     f"content-type must be application/json (got {ctype or 'none'!r})")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await _send_error(send, 413, "body", f"body is over the {self.limit}-byte limit")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await _send_error(send, 413, "body", f"body is over the {self.limit}-byte limit")
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _send_error(send, status: int, field: str, message: str) -> None:
    payload = json.dumps({"error": message, "field": field}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def create_app(bundle: ModelBundle, serve_cfg: ServeConfig, model_info: dict[str, Any],
               mixture: Mixture | None = None, explainers: list[Explainer] | None = None) -> FastAPI:
    """The app for one loaded model (and its fitted mixture, if any; and the networks /explain shows side by side).
    Everything it serves is in memory once this returns."""
    explainers = explainers or []
    explain_pool = ThreadPoolExecutor(max(1, len(explainers)), thread_name_prefix="explain")
    cache = StateCache(serve_cfg.cache_entries, int(serve_cfg.cache_megabytes * 2**20))
    served: ServedPredictor = predictor_for(bundle, mixture, model_label(model_info), cache,
                                            serve_cfg.max_context_pieces)
    engine = served.engine
    for e in explainers:
        if e.pred.model is bundle.model:  # the served network explained too: one lock for the one module
            e.lock = engine.lock
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    PredictRequest, BatchRequest, ExplainRequest = _request_models(serve_cfg)

    app = FastAPI(title="marathi-nwp", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.engine, app.state.served, app.state.model_info = engine, served, model_info
    # JSON escapes may take 6 bytes per character: room for a full batch of maximal texts, and no more.
    app.add_middleware(_BodyGuard, limit=min(serve_cfg.max_batch * (serve_cfg.max_text_chars * 6 + 64),
                                             serve_cfg.max_request_chars * 6 + serve_cfg.max_batch * 64) + 1024)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        status, field, message = _describe(errors[0] if errors else {}, serve_cfg)
        return JSONResponse({"error": message, "field": field}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body it cannot even decode (e.g. invalid UTF-8) with a bare 400; 404/405 for paths
        field = {400: "body", 404: "path", 405: "method"}.get(exc.status_code, "request")
        message = {400: "body is not valid JSON (it could not be decoded)",
                   404: f"path {request.url.path!r} does not exist (try /, /predict, /predict/batch, /explain, "
                        "/health)",
                   405: f"method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code,
                                                                                         str(exc.detail))
        return JSONResponse({"error": message, "field": field}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    def refused(e: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(e), "field": e.field}, status_code=422)

    def run(texts: list[str], k: Any, mix: str | None, mode: Any, field: str) -> tuple[list, str] | JSONResponse:
        try:
            k = check_request(texts, k, mode, serve_cfg, field)
        except RequestError as e:
            return refused(e)
        if mix == "mixture" and mixture is None:
            return JSONResponse({"error": f"{served.name} carries no fitted mixture; ask for \"mix\": \"net\", or "
                                          "fit one (`make mix`, or `make run` which registers it)", "field": "mix"},
                                status_code=422)
        return served.predict(texts, k, mix, mode), served.label(mix)

    @app.post("/predict")
    def predict(req: PredictRequest) -> Any:
        out = run([req.text], req.k, req.mix, req.mode, "text")
        if isinstance(out, JSONResponse):
            return out
        return {"words": out[0][0]["words"], "completing": out[0][0]["completing"], "model": out[1]}

    @app.post("/predict/batch")
    def predict_batch(req: BatchRequest) -> Any:
        out = run(req.texts, req.k, req.mix, req.mode, "texts[{i}]")
        if isinstance(out, JSONResponse):
            return out
        return {"results": [r["words"] for r in out[0]], "completing": [r["completing"] for r in out[0]],
                "model": out[1]}

    @app.post("/explain")
    def explain(req: ExplainRequest) -> Any:
        try:
            k = check_k(req.k, serve_cfg.max_k)
            check_text(req.text, serve_cfg.max_text_chars, "text")
        except RequestError as e:
            return refused(e)
        if not explainers:
            return JSONResponse({"error": "no network to explain: none of serve.explain "
                                          f"{list(serve_cfg.explain)} could be loaded; run `make run` (it registers "
                                          "the RNN and LSTM champions) or set serve.explain", "field": "serve.explain"},
                                status_code=503)
        # the networks side by side at once: each holds its own lock, and torch releases the GIL in its kernels
        return {"models": list(explain_pool.map(lambda e: e.explain(req.text, k), explainers))}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": served.label(), "network": served.name, "name": model_info.get("name"),
                "version": model_info.get("version"), "run_id": model_info.get("run_id"),
                "mixture": None if mixture is None else {"parts": list(mixture.weights.parts),
                                                         "theta": mixture.weights.theta,
                                                         "window": mixture.weights.window},
                "explain": [e.label for e in explainers], "cache": cache.stats()}

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    return app


# ------------------------------------------------------------------------------------------------------ the command
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def predict_cli(args, cfg: Config) -> int:
    """`python -m pipeline predict [--model REF] [-k 5] [--mix net] [--mode next] TEXT ...`: what /predict answers,
    without a server: the next words after each text, or completions of the word it ends in."""
    texts = args.text or [line.rstrip("\n") for line in sys.stdin]
    try:
        k = check_request(texts, args.k, args.mode, cfg.serve, "text {i}")
    except RequestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bundle, info = resolve_model(args.model, cfg)
    mixture = load_for(bundle) if args.mix != "net" else None
    if args.mix == "mixture" and mixture is None:
        print(f"error: {model_label(info)} carries no fitted mixture; use --mix net, or fit one with `make mix`",
              file=sys.stderr)
        return 2
    served = predictor_for(bundle, mixture, model_label(info), None, cfg.serve.max_context_pieces)
    mix = args.mix or served.default_mix
    for text, row in zip(texts, served.predict(texts, k, mix, args.mode)):
        what = f"completing «{row['completing']}»" if row["completing"] else "next word"
        words = "  ".join(f"{w['word']} {w['prob']:.3f}" for w in row["words"])
        print(f"{text!r} ({what}, {served.label(mix)}): {words}")
    return 0


def cli(args, cfg: Config) -> int:
    import uvicorn

    host = args.host or cfg.serve.host
    port = cfg.serve.port if args.port is None else args.port
    bundle, info = resolve_model(args.model, cfg)
    mixture = load_for(bundle)
    explainers = load_explainers(cfg, (str(info.get("uri")), bundle, info))  # info["uri"]: the reference loaded
    if not is_loopback(host):
        print(f"warning: binding to {host}: the API will be reachable from other machines; it has no "
              "authentication. Use --host 127.0.0.1 unless that is what you want.", file=sys.stderr)
    if cfg.train.num_threads:
        import torch

        torch.set_num_threads(cfg.train.num_threads)
    app = create_app(bundle, cfg.serve, info, mixture, explainers)
    print(f"serving {app.state.served.label()} ({info.get('uri')}) on http://{host}:{port}/", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="info", workers=1)
    return 0
