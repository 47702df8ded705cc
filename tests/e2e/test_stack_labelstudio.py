"""The stack's Label Studio calls (``stack/labelstudio.py``) against a fake Label Studio: the coordinator's real
adapter (:class:`backend.services.labelstudio.LabelStudio`) with its HTTP client on an ``httpx.MockTransport``.
Each call's request (method, path, query, body, token), its answer, and its failures: Label Studio refusing (4xx:
``LabelStudioError`` with its status), failing (5xx), timing out or unreachable (``LabelStudioUnavailable``),
answering something that is not JSON or not the expected shape (``LabelStudioError``); never the token in a
message, never a raw ``httpx``/``KeyError`` traceback. Also the scale benchmark's count of Label Studio's
predictions (``scripts/bench_scale_stack.py``) and the load script's reads (``scripts/load_and_faults.py``), which
go through these functions."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import httpx
import pytest

TOKEN = "secret-token-0123456789"
URL = "http://127.0.0.1:9"  # the discard port: a request that escaped the fake would fail, never leave the machine
REPO = Path(__file__).resolve().parents[2]


class FakeLabelStudio:
    """Answers by (method, path): each route holds answers used in turn (the last one repeats); an answer is an
    ``httpx.Response``, an exception to raise (a timeout, a refused connection) or a callable of the request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list] = {}
        self.seen: list[httpx.Request] = []

    def on(self, method: str, path: str, *answers) -> None:
        self.routes[(method, path)] = list(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if not answers:
            return httpx.Response(404, json={"detail": "no such route in the fake"})
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)  # a fresh copy

    def params(self, index: int = -1) -> dict[str, str]:
        return dict(self.seen[index].url.params)


def ok(body) -> httpx.Response:
    return httpx.Response(200, json=body)


def status(code: int, text: str = "nope") -> httpx.Response:
    return httpx.Response(code, text=text)


def timeout() -> httpx.ReadTimeout:
    return httpx.ReadTimeout("timed out")


@pytest.fixture
def fake() -> FakeLabelStudio:
    return FakeLabelStudio()


def faked(fake: FakeLabelStudio, timeout: float = 5.0, connect=None):
    """The stack's adapter (:func:`stack.labelstudio.connect`) speaking to ``fake``."""
    from stack import labelstudio

    ls = (connect or labelstudio.connect)(URL, TOKEN, timeout=timeout)
    ls._http.close()
    ls._http = httpx.Client(transport=httpx.MockTransport(fake), timeout=timeout, follow_redirects=False)
    return ls


@pytest.fixture
def client(fake):
    ls = faked(fake)
    yield ls
    ls.close()


def errors() -> tuple[type, type]:
    """The adapter's LabelStudioError (a refusal) and LabelStudioUnavailable (worth retrying), from the module that
    defines the adapter's ``request`` (wherever the coordinator keeps its connection code)."""
    from backend.errors import TransientError
    from stack.labelstudio import AdapterError, LabelStudio

    unavailable = importlib.import_module(LabelStudio.request.__module__).LabelStudioUnavailable
    assert issubclass(unavailable, TransientError) and not issubclass(AdapterError, TransientError)
    return AdapterError, unavailable


def check_failures(fake, path: str, method: str, call, what: str) -> None:
    """A refusal (403) is a LabelStudioError with Label Studio's status; a 500, a timeout and a refused connection
    are LabelStudioUnavailable; a 200 that is not JSON is a LabelStudioError; each message names the call and
    never holds the token."""
    refused, unavailable = errors()
    cases = ((status(403, "forbidden"), refused, 403), (status(500), unavailable, None), (timeout(), unavailable, None),
             (httpx.ConnectError("refused"), unavailable, None), (httpx.Response(200, text="<html/>"), refused, None))
    for answer, kind, status_code in cases:
        fake.on(method, path, answer)
        with pytest.raises(kind) as caught:
            call()
        assert type(caught.value) is kind, (answer, caught.value)
        assert what in str(caught.value) and TOKEN not in str(caught.value), str(caught.value)
        if status_code is not None:
            assert caught.value.ls_status == status_code


# -- connect, answers ----------------------------------------------------------------------------------
def test_connect_opens_the_adapter_with_the_token_and_timeout(client, fake):
    from stack.labelstudio import answers

    assert client.url == URL and client.timeout == 5.0
    fake.on("GET", "/api/current-user/whoami", ok({"id": 1}))
    assert answers(client) is True
    assert fake.seen[-1].headers["Authorization"] == f"Token {TOKEN}"


def test_connect_without_a_token_is_a_clear_error():
    from stack.labelstudio import connect

    refused, _ = errors()
    with pytest.raises(refused, match="VL4POSE_LABEL_STUDIO_TOKEN"):
        connect(URL, "")


@pytest.mark.parametrize("answer", [status(401), status(503), timeout(), httpx.ConnectError("refused"),
                                    httpx.Response(200, text="starting...")])
def test_answers_is_false_while_label_studio_starts_refuses_or_is_down(client, fake, answer):
    from stack.labelstudio import answers

    fake.on("GET", "/api/current-user/whoami", answer)
    assert answers(client) is False
    assert fake.seen and fake.seen[-1].url.path == "/api/current-user/whoami"


# -- the label stream and annotations ------------------------------------------------------------------
def test_next_task_reads_the_label_stream_and_is_none_when_everything_is_labelled(client, fake):
    from stack.labelstudio import next_task

    fake.on("GET", "/api/projects/7/next/", ok({"id": 31, "data": {"image": "/data/x.jpg"}}), status(404))
    assert next_task(client, 7) == {"id": 31, "data": {"image": "/data/x.jpg"}}
    assert fake.seen[-1].method == "GET" and fake.seen[-1].url.path == "/api/projects/7/next/"
    assert next_task(client, 7) is None


def test_next_task_failures_are_the_adapters_errors(client, fake):
    from stack.labelstudio import next_task

    check_failures(fake, "/api/projects/7/next/", "GET", lambda: next_task(client, 7), "next task")
    refused, _ = errors()
    fake.on("GET", "/api/projects/7/next/", ok({"detail": "no id here"}))
    with pytest.raises(refused, match="not a task"):
        next_task(client, 7)


@pytest.mark.parametrize("parent", [None, 12])
def test_submit_annotation_posts_the_result_lead_time_and_parent_prediction(client, fake, parent):
    from stack.labelstudio import submit_annotation

    fake.on("POST", "/api/tasks/5/annotations/", httpx.Response(201, json={"id": 88}))
    result = [{"type": "keypointlabels", "value": {"x": 1.0, "y": 2.0}}]
    assert submit_annotation(client, 5, result, 4.0, parent) == 88
    sent = json.loads(fake.seen[-1].content)
    expected = {"result": result, "lead_time": 4.0} | ({"parent_prediction": 12} if parent else {})
    assert sent == expected and fake.seen[-1].method == "POST"


def test_submit_annotation_failures_are_the_adapters_errors(client, fake):
    from stack.labelstudio import submit_annotation

    check_failures(fake, "/api/tasks/5/annotations/", "POST", lambda: submit_annotation(client, 5, [], 1.0),
                   "annotate task 5")
    refused, _ = errors()
    fake.on("POST", "/api/tasks/5/annotations/", httpx.Response(201, json={"created": True}))
    with pytest.raises(refused, match="annotation with an id"):
        submit_annotation(client, 5, [], 1.0)


# -- the ML backend's credentials ----------------------------------------------------------------------
def test_ensure_ml_basic_auth_patches_only_our_unauthenticated_connections(client, fake):
    from stack.labelstudio import ensure_ml_basic_auth

    backends = [{"id": 1, "url": "http://ml:9090/", "auth_method": "NONE"},
                {"id": 2, "url": "http://ml:9090", "auth_method": "BASIC_AUTH"},
                {"id": 3, "url": "http://elsewhere:9090", "auth_method": "NONE"}]
    fake.on("GET", "/api/ml/", lambda request: ok(backends if request.url.params["project"] == "4" else []))
    fake.on("PATCH", "/api/ml/1", ok({}))
    assert ensure_ml_basic_auth(client, [4, 5], "http://ml:9090", ("user", "pass")) == 1
    patches = [r for r in fake.seen if r.method == "PATCH"]
    assert [r.url.path for r in patches] == ["/api/ml/1"]
    assert json.loads(patches[0].content) == {"auth_method": "BASIC_AUTH", "basic_auth_user": "user",
                                              "basic_auth_pass": "pass"}
    assert [r.url.params["project"] for r in fake.seen if r.method == "GET"] == ["4", "5"]


@pytest.mark.parametrize("listing, patch, updated", [
    (status(500), ok({}), 0), (timeout(), ok({}), 0), (httpx.Response(200, text="not json"), ok({}), 0),
    (ok({"not": "a list"}), ok({}), 0), (ok([{"id": 1, "url": "http://ml:9090"}]), status(403), 0),
    (ok([{"id": 1, "url": "http://ml:9090"}]), timeout(), 0), (ok([{"id": 1, "url": "http://ml:9090"}]), ok({}), 1),
])
def test_ensure_ml_basic_auth_skips_what_label_studio_refuses_and_goes_on(client, fake, listing, patch, updated):
    from stack.labelstudio import ensure_ml_basic_auth

    fake.on("GET", "/api/ml/", listing)
    fake.on("PATCH", "/api/ml/1", patch)
    assert ensure_ml_basic_auth(client, [4, 6], "http://ml:9090", ("user", "pass")) == 2 * updated
    assert sum(r.method == "GET" for r in fake.seen) == 2  # the second project is tried whatever the first did


# -- what the benchmarks and load_and_faults read ------------------------------------------------------
def test_label_config_reads_the_project(client, fake):
    from stack.labelstudio import label_config

    fake.on("GET", "/api/projects/3/", ok({"id": 3, "label_config": "<View/>"}))
    assert label_config(client, 3) == "<View/>"
    check_failures(fake, "/api/projects/3/", "GET", lambda: label_config(client, 3), "read project 3")
    refused, _ = errors()
    fake.on("GET", "/api/projects/3/", ok({"id": 3}))
    with pytest.raises(refused, match="label_config"):
        label_config(client, 3)


def test_prediction_counts_pages_through_every_task(client, fake):
    from stack.labelstudio import prediction_counts

    pages = {"1": [1, 2], "2": [0, 2], "3": [1]}
    fake.on("GET", "/api/tasks/", lambda request: ok({"total": 5, "tasks": [
        {"id": i, "total_predictions": n} for i, n in enumerate(pages[request.url.params["page"]])]}))
    assert prediction_counts(client, 9, page_size=2) == [1, 2, 0, 2, 1]
    assert [fake.params(i)["page"] for i in range(3)] == ["1", "2", "3"] and len(fake.seen) == 3
    assert fake.params(0) == {"project": "9", "fields": "task_only", "include": "id,total_predictions", "page": "1",
                              "page_size": "2"}


def test_prediction_counts_stops_at_label_studios_404_past_the_last_page(client, fake):
    from stack.labelstudio import prediction_counts

    fake.on("GET", "/api/tasks/", ok({"total": 99, "tasks": [{"id": 1, "total_predictions": 2}]}), status(404))
    assert prediction_counts(client, 9, page_size=1) == [2]
    assert len(fake.seen) == 2


def test_prediction_counts_failures_are_the_adapters_errors(client, fake):
    from stack.labelstudio import prediction_counts

    check_failures(fake, "/api/tasks/", "GET", lambda: prediction_counts(client, 9), "count the predictions")
    refused, _ = errors()
    for body in ({"total": 1, "tasks": [{"id": 1}]}, [1, 2], {"total": 1, "tasks": [{"total_predictions": None}]}):
        fake.on("GET", "/api/tasks/", ok(body))
        with pytest.raises(refused, match="total_predictions"):
            prediction_counts(client, 9)


def test_predictions_lists_the_projects_predictions(client, fake):
    from stack.labelstudio import predictions

    listed = [{"id": 1, "task": 4}, {"id": 2, "task": 4}]
    fake.on("GET", "/api/predictions/", ok(listed))
    assert predictions(client, 3) == listed and fake.params() == {"project": "3"}
    check_failures(fake, "/api/predictions/", "GET", lambda: predictions(client, 3), "list the predictions")
    refused, _ = errors()
    fake.on("GET", "/api/predictions/", ok({"results": listed}))
    with pytest.raises(refused, match="a list of predictions"):
        predictions(client, 3)


def test_annotation_ids_pages_by_task_id_until_a_short_page(client, fake):
    from stack.labelstudio import annotation_ids

    def page(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.url.params["query"])["filters"]["items"]
        after = items[0]["value"] if items else 0
        tasks = [{"id": i, "annotations": [{"id": 100 + i}, {"id": 200 + i}] if i % 2 else []}
                 for i in range(after + 1, min(after + 3, 6))]
        return ok({"tasks": tasks})

    fake.on("GET", "/api/tasks/", page)
    assert annotation_ids(client, 2, page_size=2) == {101, 201, 103, 203, 105, 205}
    afters = [json.loads(r.url.params["query"])["filters"]["items"] for r in fake.seen]
    assert [a[0]["value"] if a else None for a in afters] == [None, 2, 4]
    assert all(r.url.params["project"] == "2" and r.url.params["fields"] == "all" for r in fake.seen)


def test_annotation_ids_failures_are_the_adapters_errors(client, fake):
    from stack.labelstudio import annotation_ids

    refused, unavailable = errors()
    for answer, kind in ((status(400), refused), (status(502), unavailable), (timeout(), unavailable),
                         (ok({"tasks": [{"id": 1, "annotations": [{"no": "id"}]}]}), refused),
                         (ok({"tasks": [{"annotations": []}]}), refused), (ok([]), refused)):
        fake.on("GET", "/api/tasks/", answer)
        with pytest.raises(kind) as caught:
            annotation_ids(client, 2)
        assert type(caught.value) is kind and TOKEN not in str(caught.value), (answer, caught.value)


def load_script(name: str, monkeypatch):
    """``scripts/<name>.py`` imported as a module (for this test only)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# -- the scale benchmark's count of Label Studio's predictions -----------------------------------------
@pytest.fixture
def bench(fake, monkeypatch):
    """``scripts/bench_scale_stack.py`` with the stack's ``connect`` answering from ``fake``."""
    module = load_script("bench_scale_stack", monkeypatch)
    opened, real = [], module.labelstudio.connect

    def connect(url: str, token: str, timeout: float):
        assert (url, token, timeout) == (URL, TOKEN, 300.0)
        opened.append(faked(fake, timeout, real))
        return opened[-1]

    monkeypatch.setattr(module.labelstudio, "connect", connect)
    yield module
    assert opened and all(ls._http.is_closed for ls in opened), "the benchmark closes its connection"


def test_the_benchmark_counts_label_studios_predictions_through_the_stack(bench, fake):
    fake.on("GET", "/api/projects/3/model-versions/", ok({"v1": 3, "v0": None}))
    fake.on("GET", "/api/tasks/", ok({"total": 2, "tasks": [{"id": 1, "total_predictions": 2},
                                                            {"id": 2, "total_predictions": 1}]}))
    fake.on("GET", "/api/predictions/", ok([{"task": 1}, {"task": 1}, {"task": 2}]))
    assert bench.label_studio_predictions(URL, TOKEN, 3) == {
        "predictions": 3, "by_version": {"v1": 3, "v0": 0}, "tasks": 2, "max_per_task": 2, "sum_per_task": 3,
        "exact_max_per_task": 2}
    fake.seen.clear()
    assert bench.label_studio_predictions(URL, TOKEN, 3, exact_up_to=2)["exact_max_per_task"] is None
    assert "/api/predictions/" not in [r.url.path for r in fake.seen]


@pytest.mark.parametrize("path", ["/api/projects/3/model-versions/", "/api/tasks/", "/api/predictions/"])
@pytest.mark.parametrize("answer", [status(500), status(403), timeout(), httpx.Response(200, text="<html/>")])
def test_the_benchmarks_label_studio_failures_are_bench_errors(bench, fake, path, answer):
    fake.on("GET", "/api/projects/3/model-versions/", ok({"v1": 1}))
    fake.on("GET", "/api/tasks/", ok({"total": 1, "tasks": [{"id": 1, "total_predictions": 1}]}))
    fake.on("GET", "/api/predictions/", ok([{"task": 1}]))
    fake.on("GET", path, answer)
    with pytest.raises(bench.BenchError, match="project 3") as caught:
        bench.label_studio_predictions(URL, TOKEN, 3)
    assert TOKEN not in str(caught.value)


# -- load_and_faults reads the project through the stack too ------------------------------------------
def test_the_predict_load_reads_the_labelling_config_and_tasks_through_the_adapter(client, fake, monkeypatch):
    script = load_script("load_and_faults", monkeypatch)
    fake.on("GET", "/api/projects/3/", ok({"id": 3, "label_config": "<View/>"}))
    fake.on("GET", "/api/tasks/", ok({"total": 2, "tasks": [{"id": 1, "data": {"image": "a"}}]}))
    result = script.predict_load(None, client, 3, clients=1, seconds=0.0)  # no time left: no /predict request
    assert result["requests"] == 0 and result["clients"] == 1
    assert [r.url.path for r in fake.seen] == ["/api/projects/3/", "/api/tasks/"]
    assert fake.params()["project"] == "3" and fake.params()["page"] == "1" and fake.params()["page_size"] == "64"
    fake.on("GET", "/api/tasks/", ok({"total": 0, "tasks": []}))
    with pytest.raises(SystemExit, match="no tasks"):
        script.predict_load(None, client, 3, clients=1, seconds=0.0)
    _, unavailable = errors()
    fake.on("GET", "/api/projects/3/", timeout())
    with pytest.raises(unavailable, match="read project 3"):
        script.predict_load(None, client, 3, clients=1, seconds=0.0)


def test_label_studio_starts_with_its_batched_prediction_import_on(tmp_path):
    """Finding (scale benchmark): off, each prediction import recounts every task of the project, so ranking a
    100,000-task project slowed to 10 s per 500 predictions and growing; the stack turns Label Studio's flag on."""
    from stack.labelstudio import BATCHED_PREDICTION_IMPORT, LabelStudioServer

    assert LabelStudioServer(tmp_path).environment()[BATCHED_PREDICTION_IMPORT] == "true"
    off = LabelStudioServer(tmp_path, batched_prediction_import=False).environment()
    assert off[BATCHED_PREDICTION_IMPORT] == "false"
