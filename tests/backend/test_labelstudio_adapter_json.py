"""The Label Studio adapter (:class:`backend.services.labelstudio.LabelStudio`) decoding Label Studio's JSON answers,
its HTTP client on an ``httpx.MockTransport``: a 200 whose body is not JSON (a proxy's HTML login page) is a
``LabelStudioError`` naming the action, never a bare ``ValueError``/``JSONDecodeError``; valid JSON answers give the
same values as before, HTTP errors the same messages, and ``import_predictions`` still accepts an empty body."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from backend.services.labelstudio_client import LabelStudioError, LabelStudioUnavailable

TOKEN = "secret-token-0123456789"
URL = "http://127.0.0.1:9"  # the discard port: a request that escaped the fake would fail, never leave the machine
LOGIN_PAGE = "<html>login</html>"


class Answers:
    """The fake Label Studio: every request gets ``answer`` (a fresh copy); the requests are kept in ``seen``."""

    def __init__(self) -> None:
        self.answer = httpx.Response(200, json={})
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(self.answer.status_code, headers=self.answer.headers, content=self.answer.content)


@pytest.fixture
def fake() -> Answers:
    return Answers()


@pytest.fixture
def ls(fake):
    from backend.services.labelstudio import LabelStudio

    adapter = LabelStudio(URL, TOKEN, timeout=5.0)
    adapter._http.close()
    adapter._http = httpx.Client(transport=httpx.MockTransport(fake), timeout=5.0, follow_redirects=False)
    yield adapter
    adapter.close()


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    return path


# (call, the action its errors name): every adapter method that decodes a JSON answer
CALLS = {
    "whoami": (lambda ls, _: ls.whoami(), "check the API token"),
    "project": (lambda ls, _: ls.project(3), "read project 3"),
    "local_storages": (lambda ls, _: ls.local_storages(3), "list local storages"),
    "upload_files": (lambda ls, image: ls.upload_files(3, [image]), "upload images"),
    "list_tasks": (lambda ls, _: list(ls.list_tasks(3)), "list tasks"),
    "task_page": (lambda ls, _: ls.task_page(3, 1, 10), "list tasks"),
    "tasks_after": (lambda ls, _: ls.tasks_after(3, "id", None, 10), "list changed tasks"),
    "export_annotated": (lambda ls, _: ls.export_annotated(3), "export annotations"),
    "import_predictions": (lambda ls, _: ls.import_predictions(3, [{"task": 1}]), "import predictions"),
    "model_versions": (lambda ls, _: ls.model_versions(3), "list model versions"),
    "delete_predictions": (lambda ls, _: ls.delete_predictions(3, "v0"), "delete the predictions of v0"),
    "views": (lambda ls, _: ls.views(3), "list Data Manager views"),
    "add_view": (lambda ls, _: ls.add_view(3, "queue", ["tasks:id"]), "add a Data Manager view"),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_a_200_that_is_not_json_is_a_label_studio_error_naming_the_action(ls, fake, image, name):
    call, what = CALLS[name]
    fake.answer = httpx.Response(200, text=LOGIN_PAGE, headers={"Content-Type": "text/html"})
    with pytest.raises(LabelStudioError) as caught:
        call(ls, image)
    assert not isinstance(caught.value, json.JSONDecodeError) and caught.value.ls_status is None
    message = str(caught.value)
    assert f"request to {what} with something that is not JSON (200)" in message, message
    assert "login" in message and "VL4POSE_LABEL_STUDIO_URL" in message and TOKEN not in message
    assert fake.seen, "the request went out"


@pytest.mark.parametrize("name", ["whoami", "views", "model_versions"])
def test_a_body_that_is_not_utf8_is_a_label_studio_error_too(ls, fake, image, name):
    call, what = CALLS[name]
    fake.answer = httpx.Response(200, content=b"\xff\xfe\x00<", headers={"Content-Type": "application/json"})
    with pytest.raises(LabelStudioError, match=f"request to {what} with something that is not JSON"):
        call(ls, image)


@pytest.mark.parametrize("name", list(CALLS))
def test_http_errors_keep_their_messages_and_kinds(ls, fake, image, name):
    call, what = CALLS[name]
    fake.answer = httpx.Response(403, text="forbidden")
    with pytest.raises(LabelStudioError) as caught:
        call(ls, image)
    assert str(caught.value) == f"Label Studio refused (403) to {what}: forbidden" and caught.value.ls_status == 403
    fake.answer = httpx.Response(502, text="bad gateway")
    with pytest.raises(LabelStudioUnavailable, match=f"^Label Studio failed \\(502\\) to {what}: bad gateway$"):
        call(ls, image)


def test_valid_json_answers_give_the_same_values(ls, fake, image):
    def answer(body) -> None:
        fake.answer = httpx.Response(200, json=body)

    answer({"id": 1, "username": "me"})
    assert ls.whoami() == {"id": 1, "username": "me"}
    answer({"id": 3, "label_config": "<View/>"})
    assert ls.project(3) == {"id": 3, "label_config": "<View/>"}
    answer([{"id": 5, "path": "/data"}])
    assert ls.local_storages(3) == [{"id": 5, "path": "/data"}]
    answer({"task_ids": [7, "8"]})
    assert ls.upload_files(3, [image]) == [7, 8]
    answer({"total": 2, "tasks": [{"id": 1}, {"id": 2}]})
    assert list(ls.list_tasks(3)) == [{"id": 1}, {"id": 2}]
    assert ls.task_page(3, 1, 10) == ([{"id": 1}, {"id": 2}], 2)
    assert ls.tasks_after(3, "id", None, 10) == [{"id": 1}, {"id": 2}]
    answer([{"id": 1, "annotations": []}])
    assert ls.export_annotated(3) == [{"id": 1, "annotations": []}]
    answer({"created": 4})
    assert ls.import_predictions(3, [{"task": 1}]) == 4
    answer([1, 2])  # not a dict: the count sent
    assert ls.import_predictions(3, [{"task": 1}, {"task": 2}, {"task": 3}]) == 3
    answer({"v1": 3, "v0": None})
    assert ls.model_versions(3) == {"v1": 3, "v0": 0}
    answer({"deleted_predictions": 6})
    assert ls.delete_predictions(3, "v0") == 6
    answer([{"id": 9, "data": {"title": "queue", "ordering": ["tasks:id"]}}, {"id": 10}])
    assert ls.views(3) == [{"id": 9, "title": "queue", "data": {"title": "queue", "ordering": ["tasks:id"]}},
                           {"id": 10, "title": None, "data": {}}]
    answer({"id": 11})
    assert ls.add_view(3, "queue", ["tasks:id"]) == 11


def test_import_predictions_still_accepts_an_empty_answer(ls, fake):
    fake.answer = httpx.Response(201, content=b"")
    assert ls.import_predictions(3, [{"task": 1}, {"task": 2}]) == 2


def test_the_export_that_is_json_but_not_a_list_keeps_its_message(ls, fake):
    fake.answer = httpx.Response(200, json={"detail": "x"})
    with pytest.raises(LabelStudioError, match="^the export of project 3 is not a list of tasks$"):
        ls.export_annotated(3)


def test_paging_past_the_end_is_still_empty_but_a_login_page_is_not_the_end(ls, fake):
    fake.answer = httpx.Response(404, json={"detail": "Invalid page."})
    assert ls.task_page(3, 9, 10) == ([], 0)
    assert list(ls.list_tasks(3)) == []
    fake.answer = httpx.Response(200, text=LOGIN_PAGE)
    with pytest.raises(LabelStudioError, match="list tasks"):
        ls.task_page(3, 9, 10)
